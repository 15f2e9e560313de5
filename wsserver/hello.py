"""The client's first message: a bare token, or a token and where to resume.

Plain Python, no I/O. Guide clients send the token as is; clients that want
the events they missed send ``{"token": "...", "last_event_id": "..."}``.
"""

from __future__ import annotations

import dataclasses
import json

from .cursors import InvalidCursor, parse_cursor
from .events import event_id_key

__all__ = ["Hello", "InvalidHello", "parse_hello"]


class InvalidHello(ValueError):
    """A first message that is neither a token nor a valid resume request."""


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """A first message: the token and, to resume, the last event id the client saw."""

    token: str
    last_event_id: str | None = None


def parse_hello(message: str) -> Hello:
    """Parse a first message: a bare token, or a JSON object with ``token`` and
    optionally ``last_event_id``; raise InvalidHello if it is neither.
    """
    text = message.strip()
    if not text.startswith("{"):
        return Hello(text)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidHello("not JSON") from None
    if not isinstance(data, dict):
        raise InvalidHello("not a JSON object")
    token = data.get("token")
    if not isinstance(token, str):
        raise InvalidHello("token must be a string")
    last_event_id = data.get("last_event_id")
    if last_event_id is not None and event_id_key(last_event_id) is None:
        try:
            parse_cursor(last_event_id)
        except InvalidCursor:
            raise InvalidHello(
                "last_event_id must be an event id like '1-0', or a Redis "
                "Cluster cursor like '3:1-0,17:2-0'"
            ) from None
    return Hello(token.strip(), last_event_id)
