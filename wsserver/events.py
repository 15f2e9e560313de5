"""Events read from the bus: validated, then forwarded exactly as received.

The payload is never re-encoded: every recipient gets the bytes the main site
published, in a text frame.
"""

from __future__ import annotations

import dataclasses
import json

__all__ = [
    "Event",
    "InvalidEvent",
    "event_id_key",
    "parse_event",
    "with_id",
]


class InvalidEvent(ValueError):
    """A bus message that is not an event the sidecar can route."""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A routable event: its content type, and its payload exactly as received."""

    content_type_id: int
    payload: bytes
    # The Redis Stream entry id the publisher gave it ("<ms>-<seq>"); None
    # for events published straight to the channel, which cannot be replayed.
    id: str | None = None


def parse_event(payload: bytes | str) -> Event:
    """Check that a bus message is a JSON object with an integer content_type_id."""
    if isinstance(payload, str):
        text, payload = payload, payload.encode()
    else:
        # Clients receive the payload in a text frame: it must be UTF-8.
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"not UTF-8: {exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"not a JSON object but {type(data).__name__}")
    content_type_id = data.get("content_type_id")
    # bool is a subclass of int, and true is not a content type.
    if type(content_type_id) is not int:
        raise InvalidEvent(
            f"content_type_id is {content_type_id!r}, expected an integer"
        )
    event_id = data.get("id")
    if event_id is not None and event_id_key(event_id) is None:
        raise InvalidEvent(f"id is {event_id!r}, expected a stream id like '1-0'")
    return Event(content_type_id, payload, event_id)


# Redis Stream ids are two unsigned 64-bit integers: at most 20 digits each.
MAX_ID_PART = 2**64 - 1
MAX_ID_LENGTH = 2 * len(str(MAX_ID_PART)) + 1


def event_id_key(event_id: object) -> tuple[int, int] | None:
    """Make stream ids comparable: "1700000000000-3" -> (1700000000000, 3).

    None for anything that is not a Redis Stream id. The length is checked
    before any conversion: an id of thousands of digits costs nothing.
    """
    if not isinstance(event_id, str) or len(event_id) > MAX_ID_LENGTH:
        return None
    milliseconds, dash, sequence = event_id.partition("-")
    if not (dash and milliseconds.isdigit() and sequence.isdigit()):
        return None
    if not (milliseconds.isascii() and sequence.isascii()):
        return None
    key = int(milliseconds), int(sequence)
    if key[0] > MAX_ID_PART or key[1] > MAX_ID_PART:
        return None
    return key


def with_id(payload: bytes, event_id: str) -> bytes:
    """Insert ``"id"`` first in a JSON object, as the publisher's script does."""
    return b'{"id":"' + event_id.encode() + b'",' + payload.lstrip()[1:]
