"""Authentication: a django-sesame token -> an active user -> what they may see.

Synchronous Django code, run in worker threads by :mod:`wsserver.database`.
It calls django-sesame's token parser directly rather than
``django.contrib.auth.authenticate()``: that never updates last_login and
never sends ``user_login_failed``, whose arguments carry the raw token.

Cost per connection: one query for the user, plus one for the permissions of
a user who is not a superuser. The content type table is cached.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from sesame import settings as sesame_settings
from sesame.tokens import parse_token

from .routing import Permissions

__all__ = ["Authenticator", "Principal", "token_pk_types"]

logger = logging.getLogger("wsserver.auth")

# Permission codenames that let a user see a model's events, as in the guide.
VISIBLE_ACTIONS = ("view", "change")

PK_SIZES = {"int": 4, "bigint": 8, "uuid": 16}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as the server needs it."""

    user_id: str
    username: str
    permissions: Permissions
    # Changes when the password does: sesame's tokens die with it, and so do
    # the connections they opened (when INVALIDATE_ON_PASSWORD_CHANGE).
    credentials: str = ""


class ContentTypeCache:
    """(app_label, model) -> content type id, reloaded when a lookup misses."""

    RELOAD_INTERVAL = 60.0

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, app_label: str, model: str) -> int | None:
        key = (app_label, model)
        content_type_id = self._ids.get(key)
        if content_type_id is None and self._may_reload():
            self.reload()
            content_type_id = self._ids.get(key)
        return content_type_id

    def reload(self) -> None:
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


class Authenticator:
    """Turn tokens into principals. Thread-safe; one per process."""

    def __init__(self, scope: str = "") -> None:
        self.scope = scope
        self.content_types = ContentTypeCache()
        self.User = get_user_model()
        self._fields = self._fields_to_load()

    def authenticate(self, token: str) -> Principal | None:
        """The principal for a valid token, or None. Database errors propagate."""
        user = parse_token(token, self._get_active_user, self.scope)
        if user is None:
            return None
        return self._principal(user)

    def reauthenticate(self, user_ids: Iterable[str]) -> dict[str, Principal | None]:
        """Recheck users whose access changed: None for those who lost it."""
        return {user_id: self._reauthenticate(user_id) for user_id in user_ids}

    def _reauthenticate(self, user_id: str) -> Principal | None:
        try:
            user = self.User._default_manager.only(*self._fields).get(pk=user_id)
        except (self.User.DoesNotExist, ValidationError, ValueError, TypeError):
            return None
        return self._principal(user) if user.is_active else None

    def group_members(self, group_id: int) -> set[str]:
        """The ids of a group's members, to recheck them when it changes."""
        through = self.User.groups.through
        [to_user] = [f for f in through._meta.fields if f.related_model is self.User]
        rows = through._default_manager.filter(group_id=group_id)
        return {str(pk) for pk in rows.values_list(to_user.attname, flat=True)}

    def _principal(self, user: Any) -> Principal:
        credentials = ""
        if sesame_settings.INVALIDATE_ON_PASSWORD_CHANGE:
            credentials = hashlib.sha256(user.password.encode()).hexdigest()[:16]
        return Principal(
            user_id=str(user.pk),
            username=str(user.get_username()),
            permissions=self.permissions_for(user),
            credentials=credentials,
        )

    def permissions_for(self, user: Any) -> Permissions:
        """The content types whose events the user may receive."""
        if user.is_superuser:
            return Permissions.all()
        # One query: SQLite refuses ORDER BY (Permission.Meta.ordering) in a UNION.
        fields = ("content_type__app_label", "codename")
        direct = Permission.objects.filter(user=user).order_by().values_list(*fields)
        via_groups = (
            Permission.objects.filter(group__user=user).order_by().values_list(*fields)
        )
        content_type_ids = set()
        # As user.has_perm(f"{app_label}.view_{model}") would decide.
        for app_label, codename in direct.union(via_groups):
            action, _, model = codename.partition("_")
            if action not in VISIBLE_ACTIONS:
                continue
            content_type_id = self.content_types.get(app_label, model)
            if content_type_id is not None:
                content_type_ids.add(content_type_id)
        return Permissions(frozenset(content_type_ids))

    def _get_active_user(self, pk: Any) -> Any:
        lookup = {sesame_settings.PRIMARY_KEY_FIELD: pk}
        try:
            user = self.User._default_manager.only(*self._fields).get(**lookup)
        except (self.User.DoesNotExist, ValidationError, ValueError, TypeError):
            return None
        return user if user.is_active else None

    def _fields_to_load(self) -> list[str]:
        fields = ["password", "is_active", "is_superuser", self.User.USERNAME_FIELD]
        if sesame_settings.INVALIDATE_ON_EMAIL_CHANGE:
            fields.append(self.User.get_email_field_name())
        return fields


def token_pk_types(token: str) -> set[str]:
    """The user pk types whose packing gives a token of this length.

    A main site and a sidecar that disagree on the pk type reject every token;
    the length of a token tells which types could have made it.
    """
    if sesame_settings.PACKER is not None:
        return set()
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return set()
    overhead = sesame_settings.SIGNATURE_SIZE
    if sesame_settings.MAX_AGE is not None:
        overhead += 4
    return {pk for pk, size in PK_SIZES.items() if len(data) == size + overhead}
