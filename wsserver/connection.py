"""The sidecar's WebSocket connections: every write and close returns at once.

websockets' ``send()``, ``ping()`` and ``close()`` wait for the transport to
drain: awaited on a client that stopped reading, they wait until its TCP
window opens, possibly forever, and hold whoever awaits them. The sidecar
never awaits a peer on a shared path. A :class:`SidecarConnection` queues its
pings, messages and close frames without waiting, bounds what it buffers,
and aborts a close that does not complete in time. Only the coroutine that
owns a connection (its resume) ever waits for it to drain, with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import Event, State

__all__ = ["CLOSE_TIMEOUT", "SidecarConnection", "connection_class"]

OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED
PONG = Opcode.PONG

# How long a closing handshake may take before the connection is aborted: a
# client that stopped reading never reads the close frame.
CLOSE_TIMEOUT = 5.0


class SidecarConnection(ServerConnection):
    """A server connection that never makes its caller wait for the client.

    It also drops every message after the first (the token): clients have
    nothing to say after it, and what they send never piles up.
    """

    # CPython keeps the attributes of a class's instances inline, without a
    # dict of their own, while they fit the keys its first instances set:
    # after a few instances, each new one has room for those keys only, and
    # one more attribute gives it a 1.5 KiB dict. So ours are slots, and
    # websockets' connection_made() attributes are set in __init__ (a burst
    # of accepted sockets creates instances before connection_made runs).
    __slots__ = (
        "_abort_timer",
        "expires_at",
        "first_message_received",
        "paused_at",
        "ping_data",
        "ping_sent_at",
    )

    # Bytes of pending output past which the connection is aborted, whatever
    # wrote them (events, or websockets' own pongs to a ping flood).
    max_buffer = 2**20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recv_messages = None  # type: ignore[assignment]  # connection_made()
        self.transport = None  # type: ignore[assignment]  # connection_made()
        self.first_message_received = False
        # When the transport's buffer last went over its high-water mark and
        # has stayed there since (asyncio's flow control): None while it drains.
        self.paused_at: float | None = None
        # When the connection is closed so that its client authenticates again
        # (WS_MAX_CONNECTION_AGE), on the event loop's clock; None: never.
        self.expires_at: float | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        # The keepalive's last ping, and when the oldest one still unanswered
        # was sent (None: every ping answered). Shared by every connection
        # pinged in a round: nothing is allocated per connection.
        self.ping_data: bytes | None = None
        self.ping_sent_at: float | None = None

    # What websockets does on its own

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            if event.opcode in DATA_OPCODES:
                if self.first_message_received:
                    return
                if event.fin:
                    self.first_message_received = True
            elif event.opcode is PONG and event.data == self.ping_data:
                # The answer to the keepalive's last ping (and to any earlier
                # one: pongs come in order).
                if self.ping_sent_at is not None:
                    self.latency = self.loop.time() - self.ping_sent_at
                self.ping_sent_at = None
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Pongs and close frames that websockets wrote in reply: a client that
        # floods pings and never reads would grow the buffer without bound.
        if self.transport.get_write_buffer_size() > self.max_buffer:
            self.transport.abort()
        # A client that started the closing handshake must end it in time
        # too (it might never close its end of the TCP connection).
        elif self.protocol.state is CLOSING:
            self._abort_later(CLOSE_TIMEOUT)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused_at = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused_at = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None

    # What the sidecar does, never waiting

    @property
    def is_open(self) -> bool:
        return self.protocol.state is OPEN

    def stalled_for(self, now: float) -> float:
        """Seconds the output has not drained below the high-water mark."""
        return 0.0 if self.paused_at is None else now - self.paused_at

    def send_keepalive_ping(self, frame: bytes, data: bytes, now: float) -> bool:
        """Write a keepalive ping: ``frame``, the ping frame carrying ``data``
        (see :mod:`wsserver.keepalive`), sent at ``now``. False if not open.

        Written straight to the transport, bypassing websockets' bookkeeping
        of pings (a future each): the protocol has nothing buffered (every
        send here writes at once), and a control frame needs no compression.
        """
        if self.protocol.state is not OPEN:
            return False
        self.ping_data = data
        if self.ping_sent_at is None:
            self.ping_sent_at = now
        self.transport.write(frame)
        return True

    def ping_sent_before(self, when: float) -> bool:
        """Whether a keepalive ping sent at ``when`` or before is unanswered."""
        sent = self.ping_sent_at
        return sent is not None and sent <= when

    def send_text_now(self, payload: bytes) -> bool:
        """Queue a text message, compressed if negotiated; False if not open."""
        if self.protocol.state is not OPEN:
            return False
        self.protocol.send_text(payload)
        self.send_data()
        return True

    def close_soon(
        self, code: int, reason: str, timeout: float = CLOSE_TIMEOUT
    ) -> None:
        """Start the closing handshake; abort the connection if it is not
        closed within ``timeout`` seconds. Idempotent."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self.send_data()
        self._abort_later(timeout)

    def _abort_later(self, timeout: float) -> None:
        if self.protocol.state is not CLOSED and self._abort_timer is None:
            self._abort_timer = self.loop.call_later(timeout, self.transport.abort)

    def abort(self) -> None:
        """Drop the TCP connection at once, with whatever it had to send."""
        self.transport.abort()


def connection_class(
    *,
    max_buffer: int,
    made: Callable[[], None],
    lost: Callable[[SidecarConnection], None],
) -> type[SidecarConnection]:
    """The connections of one server: bounded by its ``max_buffer``, telling
    it when each socket opens and when it is gone (whether or not the
    connection ever reached its handler)."""

    class Connection(SidecarConnection):
        __slots__ = ()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            made()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            lost(self)

    Connection.max_buffer = max_buffer
    return Connection
