"""``publish()``: an event of the site's own, for exactly the users named.

Imported lazily by :func:`wsserver.publisher.publish` (this module needs the
apps to be ready).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from . import conf
from .publishing import Outgoing, resolve_audience, send_on_commit


def prepare(
    event: str,
    data: Any = None,
    *,
    users: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    permissions: Iterable[str] = (),
    models: Iterable[Any] = (),
) -> Outgoing:
    """The message :func:`publish` sends, checked (see there for the errors)."""
    if not isinstance(event, str):
        raise TypeError(f"event must be a str, not {type(event).__name__}")
    if not event:
        raise ValueError("event must be a non-empty name, e.g. 'export.ready'")
    audience = resolve_audience(
        users=users, groups=groups, permissions=permissions, models=models
    )
    try:
        text = json.dumps(
            {"event": event, "data": data},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        error = TypeError if isinstance(exc, TypeError) else ValueError
        raise error(f"data cannot be serialized to JSON: {exc}") from None
    size = len(text.encode())
    max_size = conf.max_event_size()
    if size > max_size:
        raise ValueError(
            f"event {event!r} is {size} bytes as JSON (its name and data), more "
            f"than WSSERVER_MAX_EVENT_SIZE ({max_size})"
        )
    # A copy of data as it is now: changes made to it before the commit are
    # not sent.
    return Outgoing(json.loads(text), audience=audience)


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
    """See :func:`wsserver.publisher.publish`."""
    message = prepare(
        event, data, users=users, groups=groups, permissions=permissions, models=models
    )
    send_on_commit([message], using=using)
