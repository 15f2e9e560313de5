"""The delivery core: which bytes go to which connection, and who is too slow.

Plain Python with no I/O, in the style of websockets' protocol modules: no
asyncio, websockets or Redis. Connections are opaque hashable objects; the
I/O layer (:mod:`wsserver.fanout`) only writes what this module decides and
reports how much each connection has left to send.

- **Live events** (:meth:`Delivery.route`): each event goes to the
  connections the :class:`~wsserver.routing.Router` names for its audience
  (see :mod:`wsserver.audience`), except those whose resume holds or has
  already sent it (see :mod:`wsserver.resume`). Events that arrive
  together (a bulk admin action) are grouped so that each connection gets
  one write, and connections that get the same events share that write's
  bytes.
- **Slow clients** (:meth:`Delivery.too_slow`): a connection whose pending
  output passes ``max_buffer`` after a write has stopped reading. So has a
  held connection whose queue overflows. Either way it is unregistered and
  gets nothing more; the I/O layer closes it with 1013. The rule is the same
  with and without compression.
- **Resumes** (:meth:`Delivery.resume_batches`): the missed events a resuming
  connection may see, in batches of bounded size, each filtered with the
  user's access as it is when the batch is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from .audience import MAX_AUDIENCE_SIZE, Audience
from .events import ID_FIELD_SIZE, Event, InvalidEvent, event_id_key, parse_event
from .partitions import routed
from .resume import HeldTooMany, Positions, Resumes
from .routing import Principal, Router

if TYPE_CHECKING:
    from .history import Entry

__all__ = ["MAX_CLOCK_SKEW", "Delivery", "Send"]

C = TypeVar("C", bound=Hashable)

# How far in the future (by this machine's clock) an event's id may be: ids
# are Redis' clock in milliseconds, so any later one was never a stream id.
MAX_CLOCK_SKEW = 3600.0


@dataclasses.dataclass(slots=True)
class Send(Generic[C]):
    """One write: these payloads, in this order, to each of these connections."""

    payloads: list[bytes]
    connections: Iterable[C]


class Delivery(Generic[C]):
    """Decide every delivery of one process; hold no I/O object."""

    def __init__(
        self,
        router: Router[C],
        *,
        max_buffer: int,
        max_event_size: int | None = None,
        max_held: int = 10_000,
    ) -> None:
        self.router = router
        self.max_buffer = max_buffer
        # The largest event (as clients receive it) forwarded.
        self.max_event_size = (
            max_buffer if max_event_size is None else min(max_event_size, max_buffer)
        )
        self.resumes: Resumes[C] = Resumes(max_held)

    # Connections

    def register(self, connection: C, principal: Principal) -> None:
        """Start delivering events to a connection."""
        self.router.add(connection, principal)

    def unregister(self, connection: C) -> Principal | None:
        """Stop delivering anything to a connection, live or resumed: the one
        place where a connection is forgotten. Returns its principal, None if
        it was not registered."""
        self.resumes.forget(connection)
        return self.router.remove(connection)

    # Events from the bus

    def accept(
        self, payload: bytes, now: float, partition: int | str | None = None
    ) -> Event:
        """Parse a bus message into an event that can be delivered, or raise
        :class:`~wsserver.events.InvalidEvent` (``now``: the Unix time;
        ``partition``: the Redis Cluster partition it came on, if any)."""
        if len(payload) > self.max_event_size + ID_FIELD_SIZE + MAX_AUDIENCE_SIZE + 2:
            raise InvalidEvent(f"{len(payload)} bytes, more than WS_MAX_EVENT_SIZE")
        event = parse_event(payload, self.max_event_size)
        key = event_id_key(event.id)
        if key is not None and key[0] > (now + MAX_CLOCK_SKEW) * 1000:
            raise InvalidEvent(f"id {event.id} is in the future")
        if partition is not None:
            own, excluded = routed(event.audience, partition)
            if not own:
                raise InvalidEvent(
                    f"no one in its audience follows partition {partition}"
                )
            if own != event.audience or excluded is not None:
                event = Event(own, event.payload, event.id, excluded)
        return event

    def replayed(
        self, entry: Entry, partition: int | str | None = None
    ) -> Event | None:
        """An event read from the history to be routed as a live one (a
        subscriber catching up); None if it cannot be sent."""
        if entry.audience is None:
            return None
        if len(entry.payload) > self.max_event_size + ID_FIELD_SIZE:
            return None
        if partition is None:
            return Event(entry.audience, entry.payload, entry.id)
        own, excluded = routed(entry.audience, partition)
        if not own:
            return None
        return Event(own, entry.payload, entry.id, excluded)

    def route(self, events: Sequence[Event]) -> tuple[list[Send[C]], list[C]]:
        """The writes for events that arrived together, and the connections
        found too slow meanwhile (held ones whose queue overflowed: they are
        unregistered already and must be closed).

        The writes name connections without checking that they are still
        open: only the I/O layer knows. Nothing may register or unregister a
        connection until the writes are done (they iterate the router's
        sets, to make no copy on the hot path).
        """
        overflowed: list[C] = []
        if len(events) == 1:
            event = events[0]
            recipients = self._recipients(event, overflowed)
            return [Send([event.payload], recipients)], overflowed
        # Connections that get exactly the same events share one write.
        received: dict[C, list[int]] = {}
        for index, event in enumerate(events):
            for connection in self._recipients(event, overflowed):
                received.setdefault(connection, []).append(index)
        groups: dict[tuple[int, ...], list[C]] = {}
        for connection, indexes in received.items():
            groups.setdefault(tuple(indexes), []).append(connection)
        sends = [
            Send([events[index].payload for index in indexes], connections)
            for indexes, connections in groups.items()
        ]
        return sends, overflowed

    def _recipients(self, event: Event, overflowed: list[C]) -> Iterable[C]:
        recipients = self.router.recipients(event.audience)
        if event.excluded is not None:
            excluded = self.router.recipients(event.excluded)
            recipients = set(recipients).difference(excluded)
        resumes = self.resumes
        if not resumes:
            return recipients
        resumes.observe(event)
        admitted, full = [], []
        for connection in recipients:
            try:
                if resumes.admit(connection, event):
                    admitted.append(connection)
            except HeldTooMany:
                full.append(connection)
        for connection in full:
            self.unregister(connection)
        overflowed.extend(full)
        return admitted

    # Slow clients

    def too_slow(self, connection: C, pending: int) -> bool:
        """Whether a connection with ``pending`` bytes of output left after a
        write has stopped reading; if so it is unregistered, and must be closed
        (with 1013). The I/O layer compares with ``max_buffer`` itself on its
        hot loop and calls this for those past it."""
        if pending <= self.max_buffer:
            return False
        self.unregister(connection)
        return True

    # Resumes

    def hold(self, connection: C) -> None:
        """Queue a connection's live events while its missed ones are read."""
        self.resumes.hold(connection)

    def take_held(self, connection: C, after: Positions | None) -> list[Event]:
        """The live events held for a connection so far that a replay up to
        ``after`` did not include; holding goes on."""
        return self.resumes.take(connection, after)

    def release(self, connection: C, position: Positions | None) -> None:
        """Deliver live events again, except those up to ``position`` (what
        the replay sent)."""
        if position is None:
            self.resumes.forget(connection)
        else:
            self.resumes.release(connection, position)

    def resume_batches(
        self,
        connection: C,
        events: Sequence[
            tuple[Audience, bytes] | tuple[Audience, bytes, Audience | None]
        ],
        size: int,
    ) -> Iterator[list[bytes]]:
        """Batches of the (audience, payload) events a resuming connection
        may see, each about ``size`` bytes at most (one event at least). On a
        Redis Cluster an event may come with a third item: who in the audience
        takes it from another partition's copy (see wsserver.partitions).

        Each batch is filtered with the user's access when the caller
        asks for it: writing and waiting for the client in between, a change
        of access applies to the next batch. Stops when the connection is
        unregistered (revoked, too slow). Events larger than ``max_event_size``
        could never be sent whole and are skipped.
        """
        largest = self.max_event_size + ID_FIELD_SIZE  # as accept() allows
        start = 0
        while start < len(events):
            if connection not in self.router:
                return
            principal = self.router.principal(connection)
            batch: list[bytes] = []
            total = 0
            while start < len(events) and total < size:
                audience, payload, *excluded = events[start]
                start += 1
                if (
                    audience.allows(principal)
                    and not (excluded and excluded[0] and excluded[0].allows(principal))
                    and len(payload) <= largest
                ):
                    batch.append(payload)
                    total += len(payload)
            if batch:
                yield batch
