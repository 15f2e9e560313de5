"""Connections catching up on history: no gap and no duplicate at the seam.

Plain Python, no I/O. While a resuming connection is sent the events it
missed, its live events are *held*. Then it is *released* at a position (the
last event id the replay covered): live events up to that position are
dropped, since the replay sent them, until the live stream is past it. Event
ids increase in publication order and Redis delivers in that order, so once
any event past the position has gone by, no later one can be a duplicate.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from .events import Event, event_id_key, split_event_id

__all__ = ["HeldTooMany", "Position", "Positions", "Resumes"]

C = TypeVar("C", bound=Hashable)
Position = tuple[int, int]
# On a Redis Cluster, a replay's position in each partition (see
# wsserver.cursors): ids increase within a partition, not across them.
Positions = Position | dict[int | str, Position]


class HeldTooMany(Exception):
    """A held connection's queue is full: it cannot catch up."""


class Resumes(Generic[C]):
    """The connections being resumed: held ones, and released ones whose
    live events up to their position are dropped."""

    def __init__(self, max_held: int = 10_000) -> None:
        self.max_held = max_held
        self._held: dict[C, list[Event]] = {}
        self._after: dict[C, Positions] = {}

    def __bool__(self) -> bool:
        return bool(self._held or self._after)

    def hold(self, connection: C) -> None:
        """Queue a connection's live events, from now until it is released."""
        self._held[connection] = []

    def take(self, connection: C, after: Positions | None = None) -> list[Event]:
        """The events held so far (oldest first), except those up to ``after``
        (a replay sent them); holding goes on."""
        events = self._held.get(connection)
        if not events:
            return []
        self._held[connection] = []
        if after is None:
            return events
        return [event for event in events if _past(event, after)]

    def release(self, connection: C, position: Positions) -> None:
        """Deliver live events again, except those up to ``position``."""
        self._held.pop(connection, None)
        # Even if a newer event went by already: events up to the position
        # may still be on their way (they were published before the replay
        # read the stream, but the subscriber may lag behind).
        if isinstance(position, dict):
            position = dict(position)  # pruned as live events go by
            if not position:
                return
        self._after[connection] = position

    def forget(self, connection: C) -> None:
        """Stop holding or filtering a connection's live events: it is gone, or
        nothing was replayed.
        """
        self._held.pop(connection, None)
        self._after.pop(connection, None)

    def observe(self, event: Event) -> None:
        """Note a live event before it is admitted to any connection."""
        key = event_id_key(event.id)
        if key is None:
            return
        if self._after:
            # Past a connection's position, nothing later can be a duplicate.
            partition = split_event_id(event.id)[0] if event.id else None
            kept: dict[C, Positions] = {}
            for connection, position in self._after.items():
                if isinstance(position, dict):
                    if position.get(partition, key) < key:
                        del position[partition]
                    if position:
                        kept[connection] = position
                elif position >= key:
                    kept[connection] = position
            self._after = kept

    def admit(self, connection: C, event: Event) -> bool:
        """Whether to send a live event to a connection now.

        Raises HeldTooMany when a held connection's queue is full.
        """
        queue = self._held.get(connection)
        if queue is not None:
            if len(queue) >= self.max_held:
                del self._held[connection]
                raise HeldTooMany
            queue.append(event)
            return False
        after = self._after.get(connection)
        if after is None:
            return True
        if not _past(event, after):
            return False
        if isinstance(after, dict):
            after.pop(split_event_id(event.id)[0], None)  # type: ignore[arg-type]
            if after:
                return True
        del self._after[connection]
        return True


def _past(event: Event, position: Positions) -> bool:
    """Whether an event comes after a replay's position (so was not replayed)."""
    key = event_id_key(event.id)
    if key is None:  # no id: not in the history
        return True
    if isinstance(position, dict):
        partition_position = position.get(split_event_id(event.id)[0])  # type: ignore[arg-type]
        return partition_position is None or key > partition_position
    return key > position
