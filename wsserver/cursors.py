"""Resume cursors on a Redis Cluster: where a client is, in every partition.

Plain Python, no I/O. On a Redis Cluster each event's id names its partition
(``"17:1700000000000-3"``, see :mod:`wsserver.partitions`), and a client's
position is the last id it received from each partition: the *cursor*, those
ids joined by commas (``"3:1700000000000-0,17:1700000000000-3"``), which
``wsserver.js`` keeps and sends as ``last_event_id``. It is opaque to the
page: ``lastEventId`` is it.

A partition the client follows but has no id of sent it nothing it may see
since it connected: it missed what that partition has after the newest event
of the cursor (less :data:`CLOCK_MARGIN` for the masters' clocks, which stamp
the ids; events it may see before then would be in the cursor). For the same
reason a partition whose last id is older than that is resumed from there: a
client connected until its newest event has every event before it that it
may see, so entries trimmed before then make no gap (but an entry still in
the stream is resumed from exactly: events of a partition that was catching
up may be older than that time).
"""

from __future__ import annotations

from .events import event_id_key, split_event_id
from .partitions import Partition

__all__ = [
    "CLOCK_MARGIN",
    "MAX_CURSOR_LENGTH",
    "cursor_since",
    "cursor_starts",
    "parse_cursor",
]

Position = tuple[int, int]

# Milliseconds the clocks of two masters may differ by, and a partition's
# catching up may take (its events are then sent late).
CLOCK_MARGIN = 5000
# The longest cursor: one id for each of the 256 shared partitions, and one
# for the user's own partition.
MAX_CURSOR_LENGTH = 256 * 46 + 52


class InvalidCursor(ValueError):
    """Not a cursor (nor a single event id)."""


def parse_cursor(text: str) -> dict[Partition, Position]:
    """The positions in a cursor, by partition; raise InvalidCursor."""
    if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("too long")
    positions: dict[Partition, Position] = {}
    for item in text.split(","):
        key = event_id_key(item)
        if key is None:
            raise InvalidCursor(f"{item[:50]!r} is not an event id")
        partition, _ = split_event_id(item)
        if partition is None:
            raise InvalidCursor(f"{item[:50]!r} names no partition")
        if partition in positions:
            raise InvalidCursor(f"partition {partition} is there twice")
        positions[partition] = key
    return positions


def cursor_since(cursor: dict[Partition, Position]) -> Position:
    """The cursor's newest event less CLOCK_MARGIN: the client has every
    event before then that it may see (see the module's docstring)."""
    newest = max(milliseconds for milliseconds, _ in cursor.values())
    return (max(newest - CLOCK_MARGIN, 0), 0)


def cursor_starts(
    cursor: dict[Partition, Position], partitions: frozenset[Partition]
) -> dict[Partition, tuple[Position, bool]]:
    """Where to resume each followed partition: (position, exact). Exact: the
    id of the last event received, or of the start; else the cursor's time
    (:func:`cursor_since`). An exact position the stream no longer reaches
    that is older than that time is resumed from that time instead."""
    since = cursor_since(cursor)
    return {
        partition: (cursor[partition], True) if partition in cursor else (since, False)
        for partition in partitions
    }
