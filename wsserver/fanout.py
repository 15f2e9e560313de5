"""Fan-out: each event framed once, the same bytes written to every recipient.

Server-to-client frames are not masked, so without compression an event's
frame is identical for every recipient: it is built once and written to each
recipient's transport, which is the least work a delivery can cost. Events
that arrive together (a bulk admin action) are grouped so that each
connection gets one write for all of them.

With permessage-deflate each connection compresses with its own context, so
each message goes through the connection's protocol instead.

Either way, a connection whose pending output passes ``max_buffer`` bytes has
stopped reading: it gets no more events and ``on_slow`` is called to close it.
Nothing here waits: writes only queue bytes.

A connection that is being sent its missed events is *held*: live events for
it are queued instead, and handed to the resuming code, which sends those
that the replay did not include.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .connection import SidecarConnection
from .events import Event
from .resume import HeldTooMany, Position, Resumes
from .routing import Router

__all__ = ["Fanout", "text_frame"]

OPEN = State.OPEN


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, uncompressed text frame carrying ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class Fanout:
    """Deliver events to the connections the router names."""

    def __init__(
        self,
        router: Router[SidecarConnection],
        *,
        max_buffer: int,
        compression: bool,
        on_slow: Callable[[SidecarConnection], None],
    ) -> None:
        self.router = router
        self.max_buffer = max_buffer
        self.compression = compression
        self.on_slow = on_slow
        self.deliveries = 0
        self._pending: list[Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.resumes: Resumes[SidecarConnection] = Resumes()

    # Resuming connections (see wsserver.resume)

    def hold(self, connection: SidecarConnection) -> None:
        """Queue the connection's live events until :meth:`release`."""
        self.resumes.hold(connection)

    def take_held(self, connection: SidecarConnection) -> list[Event]:
        """The events held so far for a connection, including pending ones."""
        if self._pending:
            self.flush()
        return self.resumes.take(connection)

    def release(self, connection: SidecarConnection, position: Position | None) -> None:
        """Deliver live events again, except those up to ``position``."""
        if position is None:
            self.resumes.forget(connection)
        else:
            self.resumes.release(connection, position)

    def forget(self, connection: SidecarConnection) -> None:
        self.resumes.forget(connection)

    def _recipients(self, event: Event) -> Iterable[SidecarConnection]:
        recipients = self.router.recipients(event.content_type_id)
        if not self.resumes:
            return recipients
        self.resumes.observe(event)
        return self._admitted(list(recipients), event)

    def _admitted(self, recipients: list[SidecarConnection], event: Event):
        for connection in recipients:
            try:
                if self.resumes.admit(connection, event):
                    yield connection
            except HeldTooMany:
                self.router.remove(connection)
                self.on_slow(connection)

    # Live events

    def submit(self, event: Event) -> None:
        """Queue an event; events submitted in the same loop iteration go together."""
        if not self._pending:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)
        self._pending.append(event)

    def flush(self) -> None:
        events, self._pending = self._pending, []
        if self.compression:
            self._flush_compressed(events)
        elif len(events) == 1:
            # The hot loop: write() inlined.
            event = events[0]
            frame = text_frame(event.payload)
            max_buffer = self.max_buffer
            slow = []
            deliveries = 0
            # No copy: nothing changes the router until the loop is done.
            for connection in self._recipients(event):
                if connection.protocol.state is OPEN:
                    transport = connection.transport
                    transport.write(frame)
                    deliveries += 1
                    if transport.get_write_buffer_size() > max_buffer:
                        slow.append(connection)
            self.deliveries += deliveries
            for connection in slow:
                self._too_slow(connection)
        else:
            batches: dict[SidecarConnection, list[bytes]] = {}
            for event in events:
                frame = text_frame(event.payload)
                for connection in self._recipients(event):
                    batches.setdefault(connection, []).append(frame)
            for connection, frames in batches.items():
                self._write_frames(connection, frames)

    def _flush_compressed(self, events: list[Event]) -> None:
        slow: set[SidecarConnection] = set()
        for event in events:
            for connection in self._recipients(event):
                if connection in slow or not connection.send_text_now(event.payload):
                    continue
                self.deliveries += 1
                if connection.transport.get_write_buffer_size() > self.max_buffer:
                    slow.add(connection)
        for connection in slow:
            self._too_slow(connection)

    # Writes of several events to one connection (bursts, resumes)

    def write(self, connection: SidecarConnection, payloads: list[bytes]) -> bool:
        """Queue these events for one connection, under the same buffer bound
        as live delivery; False if it is not open (or was just found too slow)."""
        if self.compression:
            for payload in payloads:
                if not connection.send_text_now(payload):
                    return False
            self.deliveries += len(payloads)
            if connection.transport.get_write_buffer_size() > self.max_buffer:
                self._too_slow(connection)
                return False
            return True
        return self._write_frames(connection, [text_frame(p) for p in payloads])

    def _write_frames(self, connection: SidecarConnection, frames: list[bytes]) -> bool:
        if connection.protocol.state is not OPEN:
            return False
        transport = connection.transport
        transport.write(b"".join(frames))
        self.deliveries += len(frames)
        if transport.get_write_buffer_size() > self.max_buffer:
            self._too_slow(connection)
            return False
        return True

    def _too_slow(self, connection: SidecarConnection) -> None:
        self.router.remove(connection)
        self.on_slow(connection)
