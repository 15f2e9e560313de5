"""Events read from the bus: validated, then forwarded exactly as received.

Two kinds of bus message (see :mod:`wsserver.audience`):

- an admin event: a JSON object with an integer ``content_type_id``, sent
  to who may view or change that model;
- an event with an audience: ``@<audience JSON>\n<event JSON>``, sent to
  that audience; clients receive the event part only.

The event is never re-encoded: every recipient gets the bytes the main site
published, in a text frame.
"""

from __future__ import annotations

import dataclasses
import json

from .audience import ADDRESSED, Audience, InvalidAudience, parse_audience

__all__ = [
    "Event",
    "InvalidEvent",
    "event_id_key",
    "parse_event",
    "split_event_id",
    "with_id",
]


class InvalidEvent(ValueError):
    """A bus message that is not an event the sidecar can route."""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A routable event: who may receive it, and its payload as clients get it."""

    audience: Audience
    payload: bytes
    # The Redis Stream entry id the publisher gave it ("<ms>-<seq>", or
    # "<partition>:<ms>-<seq>" on a Redis Cluster); None for events published
    # straight to the channel, which cannot be replayed.
    id: str | None = None
    # On a Redis Cluster, who in ``audience`` takes the event from another
    # partition's copy (see wsserver.partitions); None: nobody.
    excluded: Audience | None = None


# Admin events of a content type share one audience object.
_by_content_type: dict[int, Audience] = {}


def content_type_audience(content_type_id: int) -> Audience:
    """The audience of an admin event of this content type (shared)."""
    audience = _by_content_type.get(content_type_id)
    if audience is None:
        if len(_by_content_type) > 10_000:
            _by_content_type.clear()
        audience = _by_content_type[content_type_id] = Audience.of_content_type(
            content_type_id
        )
    return audience


def parse_event(payload: bytes | str, max_size: int | None = None) -> Event:
    """Check a bus message: an admin event with an integer content_type_id, or
    an event with a well-formed audience. ``max_size``: the largest payload
    (as clients receive it) accepted."""
    if isinstance(payload, str):
        payload = payload.encode()
    audience = None
    if payload[:1] == ADDRESSED:
        header, newline, payload = payload.partition(b"\n")
        if not newline:
            raise InvalidEvent("an audience but no event after it")
        try:
            audience = parse_audience(header[1:])
        except InvalidAudience as exc:
            raise InvalidEvent(f"audience: {exc}") from None
    # The publisher's limit is on the event without its "id" (the Redis
    # Stream gives it on publishing): allow for it.
    if max_size is not None and len(payload) > max_size + ID_FIELD_SIZE:
        raise InvalidEvent(f"{len(payload)} bytes, more than WS_MAX_EVENT_SIZE")
    data = _json_object(payload)
    if audience is None:
        content_type_id = data.get("content_type_id")
        # bool is a subclass of int, and true is not a content type.
        if type(content_type_id) is not int:
            raise InvalidEvent(
                f"content_type_id is {content_type_id!r}, expected an integer"
            )
        audience = content_type_audience(content_type_id)
    event_id = data.get("id")
    if event_id is not None:
        if event_id_key(event_id) is None:
            raise InvalidEvent(f"id is {event_id!r}, expected a stream id like '1-0'")
        if max_size is not None and len(payload) - _ID_FIELD - len(event_id) > max_size:
            raise InvalidEvent(f"{len(payload)} bytes, more than WS_MAX_EVENT_SIZE")
    return Event(audience, payload, event_id)


def _json_object(payload: bytes) -> dict:
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
    return data


# Redis Stream ids are two unsigned 64-bit integers: at most 20 digits each.
MAX_ID_PART = 2**64 - 1
MAX_ID_LENGTH = 2 * len(str(MAX_ID_PART)) + 1
# A Redis Cluster partition's id starts with "<partition>:" ("255:" or
# "u1048575:" at most).
MAX_PREFIX_LENGTH = len("u1048575:")
# The most that inserting '"id":"<id>",' adds to an event.
_ID_FIELD = len('"id":"",')
ID_FIELD_SIZE = _ID_FIELD + MAX_PREFIX_LENGTH + MAX_ID_LENGTH


def event_id_key(event_id: object) -> tuple[int, int] | None:
    """Make stream ids comparable: "1700000000000-3" -> (1700000000000, 3).

    A Redis Cluster partition's ids start with the partition and a colon
    ("17:1700000000000-3", "u42:1700000000000-3"), which this ignores (see
    :func:`split_event_id`).
    None for anything that is not a stream id. The length is checked before
    any conversion: an id of thousands of digits costs nothing.
    """
    if (
        not isinstance(event_id, str)
        or len(event_id) > MAX_ID_LENGTH + MAX_PREFIX_LENGTH
    ):
        return None
    if ":" in event_id:
        partition, _, event_id = event_id.partition(":")
        if not _partition(partition):
            return None
    if len(event_id) > MAX_ID_LENGTH:
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


def split_event_id(event_id: str) -> tuple[int | str | None, str]:
    """A cluster id's partition and stream id ("17:1-0" -> (17, "1-0"),
    "u42:1-0" -> ("u42", "1-0")); the partition is None in an id without one
    (or with one that is not a partition)."""
    partition, colon, stream_id = event_id.rpartition(":")
    if not colon:
        return None, event_id
    from .partitions import parse_partition

    return parse_partition(partition), stream_id


def _partition(text: str) -> bool:
    """Whether an id's prefix names a partition: "0" to "255", "u0" to
    "u1048575" (see wsserver.partitions; not imported: it imports Django-free
    routing, which must not import this)."""
    if text.startswith("u"):
        number = text[1:]
        return 0 < len(number) <= 7 and number.isascii() and number.isdigit()
    return 0 < len(text) <= 3 and text.isascii() and text.isdigit()


def with_id(payload: bytes, event_id: str) -> bytes:
    """Insert ``"id"`` first in a JSON object, as the publisher's script does."""
    return b'{"id":"' + event_id.encode() + b'",' + payload.lstrip()[1:]
