"""Catching up after a subscription was lost: nothing missed, nothing twice.

Plain Python, no I/O. For each stream it follows (the one channel's, or each
Redis Cluster partition's; ``None`` names the one channel), the subscriber
keeps the id of the last event it passed on. When a subscription comes back
(after an outage, a failover, a slot move), the events after that id are read
from the stream and passed on first, while live ones are held; then the held
ones are passed on, except those the backfill already sent. If the stream no
longer reaches back to that id, the connections that follow it are told
(``resume_gap``) instead of missing events quietly.
"""

from __future__ import annotations

from collections.abc import Hashable

from .counters import Counters
from .events import Event, event_id_key

__all__ = ["Catchup"]

Position = tuple[int, int]
# The position of a stream followed from its very first entry.
START: Position = (0, 0)


class Catchup:
    """The position of each stream followed, and what is held meanwhile."""

    def __init__(self, counters: Counters, max_held: int = 100_000) -> None:
        self.counters = counters
        self.max_held = max_held
        self._positions: dict[Hashable, Position] = {}
        self._held: dict[Hashable, list[Event]] = {}

    def position(self, stream: Hashable) -> Position | None:
        """The last id passed on (None: not followed)."""
        return self._positions.get(stream)

    def follow(self, stream: Hashable, position: Position) -> None:
        """Start following a stream at ``position``, unless followed already."""
        self._positions.setdefault(stream, position)

    def streams(self) -> list[Hashable]:
        """The streams followed, or held."""
        return [*self._positions, *(s for s in self._held if s not in self._positions)]

    def forget(self, stream: Hashable) -> None:
        """Stop following a stream (no connection needs it any more)."""
        self._positions.pop(stream, None)
        self._held.pop(stream, None)

    def hold(self, stream: Hashable) -> None:
        """A backfill starts: hold the stream's live events until it ends."""
        self._held.setdefault(stream, [])

    def holding(self, stream: Hashable) -> bool:
        return stream in self._held

    def live(self, stream: Hashable, event: Event) -> bool:
        """Whether to pass a live event on now (False: held, or a duplicate).

        A stream whose held events pass ``max_held`` stops holding: its
        backfill will report a gap.
        """
        held = self._held.get(stream)
        if held is not None:
            if len(held) < self.max_held:
                held.append(event)
            return False
        return self._advance(stream, event)

    def backfilled(self, stream: Hashable, event: Event) -> bool:
        """Whether to pass on an event read from the stream by a backfill."""
        return self._advance(stream, event)

    def release(self, stream: Hashable) -> list[Event]:
        """The backfill is done: the held events to pass on now, in order."""
        held = self._held.pop(stream, [])
        return [event for event in held if self._advance(stream, event)]

    def rewind(self, stream: Hashable, position: Position) -> None:
        """Move back to ``position``: the stream lost entries after it (a
        failover to a replica that had not received them)."""
        if stream in self._positions:
            self._positions[stream] = min(self._positions[stream], position)

    def jump(self, stream: Hashable, position: Position) -> None:
        """Move on to ``position``: what came before it is not sent (a gap
        that the connections were told of)."""
        current = self._positions.get(stream)
        self._positions[stream] = (
            position if current is None else max(current, position)
        )

    def overflowed(self, stream: Hashable) -> bool:
        held = self._held.get(stream)
        return held is not None and len(held) >= self.max_held

    def _advance(self, stream: Hashable, event: Event) -> bool:
        key = event_id_key(event.id)
        if key is None:  # published without history: cannot be a duplicate
            return True
        position = self._positions.get(stream)
        if position is not None and key <= position:
            self.counters.bus_duplicates += 1
            return False
        self._positions[stream] = key
        return True
