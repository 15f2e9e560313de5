"""Fan-out: write what the delivery core decides, each event framed once.

Server-to-client frames are not masked, so without compression an event's
frame is identical for every recipient: it is built once and the same bytes
are written to each recipient's transport, which is the least work a
delivery can cost. With permessage-deflate each connection compresses with
its own context, so each message goes through the connection's protocol.

Either way the decisions are :mod:`wsserver.delivery`'s: who gets what, and
which connections are too slow (pending output past ``max_buffer`` after a
write). Only open connections are written to and counted. Nothing here
waits: writes only queue bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .catchup import Catchup
from .closes import CLIENT_TOO_SLOW
from .connection import SidecarConnection
from .counters import Counters
from .delivery import Delivery, Send
from .events import Event, InvalidEvent
from .history import Entry
from .resume import Positions

__all__ = ["Fanout", "text_frame"]

logger = logging.getLogger("wsserver.server")

OPEN = State.OPEN


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, uncompressed text frame carrying ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class Fanout:
    """The writer of live events and of resumes' batches."""

    def __init__(
        self,
        delivery: Delivery[SidecarConnection],
        counters: Counters,
        *,
        compression: bool,
        catchup: Catchup | None = None,
    ) -> None:
        self.delivery = delivery
        self.counters = counters
        self.compression = compression
        # What the subscriber passed on, to catch up after losing it.
        self.catchup = catchup
        self._pending: list[Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def receive(
        self, payload: bytes, partition: int | str | None = None
    ) -> Event | None:
        """A message from the bus (on a Redis Cluster, from this partition):
        submit its event, or count and skip it. While the subscriber catches
        up (see wsserver.catchup), it is held, or dropped if sent already."""
        try:
            event = self.delivery.accept(payload, time.time(), partition)
        except InvalidEvent as exc:
            self.counters.bus_events["invalid"] += 1
            logger.warning("Skipped a bus message: %s: %.100r", exc, payload)
            return None
        self.counters.bus_events["routed"] += 1
        if self.catchup is None or self.catchup.live(partition, event):
            self.submit(event)
        return event

    def backfill(self, partition: int | str | None, entries: list[Entry]) -> None:
        """Submit the events a subscriber read from the history after it
        subscribed again, except those it passed on already."""
        catchup = self.catchup
        assert catchup is not None
        for entry in entries:
            if entry.audience is None:
                continue  # invalid, counted by the history
            event = self.delivery.replayed(entry, partition)
            if event is not None and catchup.backfilled(partition, event):
                self.submit(event)

    def release(self, partition: int | str | None) -> None:
        """The backfill is done: submit the live events held meanwhile."""
        assert self.catchup is not None
        for event in self.catchup.release(partition):
            self.submit(event)

    def submit(self, event: Event) -> None:
        """Queue an event; events submitted in the same loop iteration go together."""
        if not self._pending:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)
        self._pending.append(event)

    def flush(self) -> None:
        """Write the queued events now."""
        events, self._pending = self._pending, []
        if not events:
            return
        sends, overflowed = self.delivery.route(events)
        slow: list[SidecarConnection] = []
        for send in sends:
            self._write(send, slow)
        for connection in overflowed:
            self._close_slow(connection)
        # After the writes: they iterate the router, which this changes.
        for connection in slow:
            self._too_slow(connection)

    def take_held(
        self, connection: SidecarConnection, after: Positions | None
    ) -> list[Event]:
        """The events held for a resuming connection, those queued included."""
        if self._pending:
            self.flush()
        return self.delivery.take_held(connection, after)

    def write(self, connection: SidecarConnection, payloads: list[bytes]) -> bool:
        """Write several events to one connection (a resume's batch), under the
        same buffer bound; False if it is not open or was found too slow."""
        if connection.protocol.state is not OPEN:
            return False
        slow: list[SidecarConnection] = []
        self._write(Send(payloads, (connection,)), slow)
        if slow:
            self._too_slow(connection)
            return False
        return True

    def _write(self, send: Send[SidecarConnection], slow: list) -> None:
        """Write one send to its open connections, count the deliveries, and
        add to ``slow`` those whose pending output then passes the bound."""
        limit = self.delivery.max_buffer
        deliveries = 0
        if self.compression:
            # Each message compressed by its connection: one that passes the
            # bound within a burst gets no more of it.
            payloads = send.payloads
            for connection in send.connections:
                if connection.protocol.state is OPEN:
                    transport = connection.transport
                    for payload in payloads:
                        connection.send_text_now(payload)
                        deliveries += 1
                        if transport.get_write_buffer_size() > limit:
                            slow.append(connection)
                            break
        else:
            if len(send.payloads) == 1:
                data = text_frame(send.payloads[0])
            else:
                data = b"".join(map(text_frame, send.payloads))
            # The hot loop: one write per recipient, and the bound.
            written = 0
            for connection in send.connections:
                if connection.protocol.state is OPEN:
                    transport = connection.transport
                    transport.write(data)
                    written += 1
                    if transport.get_write_buffer_size() > limit:
                        slow.append(connection)
            deliveries = written * len(send.payloads)
        self.counters.deliveries += deliveries

    def _too_slow(self, connection: SidecarConnection) -> None:
        if self.delivery.too_slow(
            connection, connection.transport.get_write_buffer_size()
        ):
            self._close_slow(connection)

    def disconnect(self, connection: SidecarConnection, close: tuple[int, str]) -> None:
        """Stop routing to a connection and close it, without waiting."""
        self.delivery.unregister(connection)
        connection.close_soon(*close)

    def _close_slow(self, connection: SidecarConnection) -> None:
        """Close a connection that stopped reading (it is unregistered
        already); it is aborted if the close hangs."""
        self.counters.slow_client_closes += 1
        logger.warning(
            "Connection %s closed: client too slow (%d bytes pending)",
            connection.id,
            connection.transport.get_write_buffer_size(),
        )
        connection.close_soon(*CLIENT_TOO_SLOW)
