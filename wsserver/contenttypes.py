"""The content type table, cached: (app_label, model) -> content type id.

Permissions name models by codename (``view_article`` in app ``catalog``);
events name them by content type id. :class:`wsserver.auth.Authenticator`
turns one into the other for every principal, so the table (a few hundred
rows at most) is read once and again only when a lookup misses, at most once
a minute. Synchronous Django code, thread-safe.
"""

from __future__ import annotations

import threading
import time

from django.contrib.contenttypes.models import ContentType

__all__ = ["ContentTypeCache"]


class ContentTypeCache:
    """(app_label, model) -> content type id, reloaded when a lookup misses."""

    RELOAD_INTERVAL = 60.0

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, app_label: str, model: str) -> int | None:
        """The id of a content type, or None if there is no such model."""
        key = (app_label, model)
        content_type_id = self._ids.get(key)
        if content_type_id is None and self._may_reload():
            self.reload()
            content_type_id = self._ids.get(key)
        return content_type_id

    def reload(self) -> None:
        """Read the whole content type table (a few hundred rows at most)."""
        ids = {
            (app_label, model): pk
            for pk, app_label, model in ContentType.objects.values_list(
                "pk", "app_label", "model"
            )
        }
        with self._lock:
            self._ids = ids
            self._loaded_at = time.monotonic()

    def _may_reload(self) -> bool:
        # A codename like "view_reports" on model "report" never matches:
        # don't reload the table for it on every authentication.
        return time.monotonic() - self._loaded_at > self.RELOAD_INTERVAL
