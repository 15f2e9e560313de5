"""The main site's half of wsserver: publish committed events to Redis.

Add ``"wsserver.publisher"`` to the main site's ``INSTALLED_APPS``; every
:class:`~django.contrib.admin.models.LogEntry` that is committed is then
published on the Redis channel that the sidecar reads, and the site's own
code sends events of its own with :func:`publish`::

    from wsserver.publisher import publish

    publish("export.ready", {"url": "/exports/42.csv"}, users=[request.user])

Settings (all optional):

``WSSERVER_REDIS_URL``
    Redis to publish to. Default: ``"redis://127.0.0.1:6379/1"``, like the
    sidecar's ``REDIS_URL``.
``WSSERVER_CHANNEL``
    Channel to publish on. Default: ``"events"``, like ``WS_CHANNEL``.
``WSSERVER_SESAME_SCOPE``
    Scope of the tokens made by the template tag and the token view. Default:
    ``"wsserver"``, like ``WS_SESAME_SCOPE``: a scope of its own, so that
    these tokens are never login links for the site (django-sesame's login
    middleware and view accept only the default scope, ``""``).
``WSSERVER_HISTORY_SIZE``
    Events kept in a Redis Stream (``<channel>:history``) so that clients
    can resume after a disconnection; 0 disables history. Default: ``10000``,
    like the sidecar's ``WS_HISTORY_SIZE``.
``WSSERVER_PUBLISH_TIMEOUT``
    Seconds to wait for Redis before giving up (and logging). Default: ``2``.
``WSSERVER_MAX_EVENT_SIZE``
    The largest event published, in bytes: its JSON as clients receive it,
    without the ``"id"``. :func:`publish` raises ValueError for a larger one;
    a larger admin (or model-change) event is logged and skipped. Default:
    ``65536``, like the sidecar's ``WS_MAX_EVENT_SIZE`` (keep them equal).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["publish"]


def publish(
    event: str,
    data: Any = None,
    *,
    users: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    permissions: Iterable[str] = (),
    models: Iterable[Any] = (),
    using: str | None = None,
) -> None:
    """Send the event ``event`` with ``data`` to the union of the audiences.

    Clients receive ``{"id": "...", "event": event, "data": data}`` (no
    ``id`` when WSSERVER_HISTORY_SIZE is 0). The recipients, at least one
    audience of:

    - ``users``: user instances or primary keys;
    - ``groups``: ``Group`` instances, names or pks: their members when the
      event is delivered;
    - ``permissions``: ``"app_label.codename"`` strings: users who have any of
      them (directly, through a group, or as active superusers);
    - ``models``: model classes, instances or ``"app_label.model"`` strings:
      users who may view or change the model, as for admin events.

    Superusers receive ``permissions`` and ``models`` events, never another
    user's ``users`` or ``groups`` ones.

    Inside a transaction (of the database ``using``, by default the default
    one) the event is sent when, and only if, it commits; outside one, at
    once. Bad arguments raise at the call, ValueError or TypeError naming the
    argument: no audience, an unknown group name or model, a permission not of
    the form ``"app_label.codename"``, ``data`` that JSON cannot represent,
    an event larger than WSSERVER_MAX_EVENT_SIZE. Redis being down is logged
    on the ``wsserver.publisher`` logger, never raised: the event is lost.
    """
    # Here: the package is imported before the apps are ready.
    from .api import publish

    publish(
        event,
        data,
        users=users,
        groups=groups,
        permissions=permissions,
        models=models,
        using=using,
    )
