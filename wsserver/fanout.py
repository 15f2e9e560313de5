"""Fan-out: each event framed once, the same bytes written to every recipient.

Server-to-client frames are not masked, so without compression an event's
frame is identical for every recipient: it is built once and written to each
recipient's transport, which is the least work a delivery can cost. Events
that arrive together (a bulk admin action) are grouped so that each
connection gets one write for all of them.

With permessage-deflate each connection compresses with its own context, so
events go through websockets' ``broadcast()`` one by one instead.

A connection whose pending output passes ``max_buffer`` bytes has stopped
reading: it gets no more events and ``on_slow`` is called to close it.

A connection that is being sent its missed events is *held*: live events for
it are queued instead, and handed to the resuming code, which sends those
that the replay did not include.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.frames import Frame, Opcode
from websockets.protocol import State

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
        router: Router[ServerConnection],
        *,
        max_buffer: int,
        compression: bool,
        on_slow: Callable[[ServerConnection], None],
    ) -> None:
        self.router = router
        self.max_buffer = max_buffer
        self.compression = compression
        self.on_slow = on_slow
        self.deliveries = 0
        self._pending: list[Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.resumes: Resumes[ServerConnection] = Resumes()

    # Resuming connections (see wsserver.resume)

    def hold(self, connection: ServerConnection) -> None:
        """Queue the connection's live events until :meth:`release`."""
        self.resumes.hold(connection)

    def take_held(self, connection: ServerConnection) -> list[Event]:
        """The events held so far for a connection, including pending ones."""
        if self._pending:
            self.flush()
        return self.resumes.take(connection)

    def release(self, connection: ServerConnection, position: Position) -> None:
        """Deliver live events again, except those up to ``position``."""
        self.resumes.release(connection, position)

    def forget(self, connection: ServerConnection) -> None:
        self.resumes.forget(connection)

    def _recipients(self, event: Event):
        recipients = self.router.recipients(event.content_type_id)
        if not self.resumes:
            return recipients
        self.resumes.observe(event)
        return self._admitted(list(recipients), event)

    def _admitted(self, recipients: list[ServerConnection], event: Event):
        for connection in recipients:
            try:
                if self.resumes.admit(connection, event):
                    yield connection
            except HeldTooMany:
                self.router.remove(connection)
                self.on_slow(connection)

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
            for event in events:
                recipients = list(self._recipients(event))
                broadcast(recipients, event.payload, text=True)
                self.deliveries += len(recipients)
        elif len(events) == 1:
            # The hot loop: _write() inlined.
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
            batches: dict[ServerConnection, list[bytes]] = {}
            for event in events:
                frame = text_frame(event.payload)
                for connection in self._recipients(event):
                    batches.setdefault(connection, []).append(frame)
            for connection, frames in batches.items():
                self._write(connection, b"".join(frames), len(frames))

    def _write(self, connection: ServerConnection, data: bytes, count: int = 1) -> None:
        if connection.protocol.state is not OPEN:
            return
        transport = connection.transport
        transport.write(data)
        self.deliveries += count
        if transport.get_write_buffer_size() > self.max_buffer:
            self._too_slow(connection)

    def _too_slow(self, connection: ServerConnection) -> None:
        self.router.remove(connection)
        self.on_slow(connection)
