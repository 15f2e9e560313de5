"""Keepalive: one loop for every connection, that never waits on any of them.

Every ``WS_PING_INTERVAL`` seconds, on a fixed cadence, a round deals with
each open connection:

- aborted, when its output has not drained for ``WS_PING_TIMEOUT`` (the
  client stopped reading: a ping or a close frame would never reach it);
- closed, when it is past its maximum age (``WS_MAX_CONNECTION_AGE``), so that
  its client authenticates again;
- or sent a ping, written without waiting, unless its last ping is still
  unanswered. ``WS_PING_TIMEOUT`` after the round, those whose ping is still
  unanswered are closed (and aborted if the close hangs). As with websockets'
  keepalive, a connection has one ping awaiting its pong at a time: one whose
  pong comes late gets its next ping with the round after it.

As websockets' own keepalive, which would run one task per connection, but
with one loop: it saves memory per connection, and one client that stopped
reading cannot hold the pings of the others.

What rounds cost is most of what 10,000 idle connections cost, so a ping
costs the least it can: its frame is written straight to the connection's
transport, with no future and no entry in a dict (websockets' ``ping()``
makes both), its data a keyed hash of one random key drawn per round. A connection
remembers when its oldest unanswered ping was sent; a pong carrying its last
ping's data forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from hashlib import blake2b

from websockets.frames import Frame, Opcode

from .closes import CONNECTION_EXPIRED, KEEPALIVE_TIMEOUT
from .connection import SidecarConnection
from .counters import Counters

__all__ = ["Keepalive", "ping_frame"]

logger = logging.getLogger("wsserver.server")

# Keepalive pings sent before the event loop gets to run something else.
PINGS_PER_STEP = 100
# asyncio may run a timer up to its clock's resolution early.
EARLY = 0.001


def ping_frame(data: bytes) -> bytes:
    """A complete, unmasked ping frame carrying ``data``."""
    return Frame(Opcode.PING, data).serialize(mask=False)


# What ping_frame() puts before 4 bytes of data: FIN and PING, length 4.
PING_HEADER = ping_frame(b"0000")[:-4]


class Keepalive:
    """Ping, close or abort every open connection, one round at a time."""

    def __init__(
        self,
        connections: Callable[[], Iterable[SidecarConnection]],
        *,
        interval: float | None,
        timeout: float | None,
        unregister: Callable[[SidecarConnection], object],
        counters: Counters | None = None,
    ) -> None:
        self.connections = connections
        self.interval = interval
        self.timeout = timeout
        # Stops routing events to a connection before it is closed.
        self.unregister = unregister
        self.counters = Counters() if counters is None else counters
        # The clock and the sleep of the rounds' schedule (tests replace them).
        self.time: Callable[[], float] | None = None
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def run(self) -> None:
        """Run rounds until cancelled. Without pings, rounds still catch
        stalled and expired connections."""
        time = self.time or asyncio.get_running_loop().time
        period = self.interval or self.timeout or 20.0
        # Pings a crashed run() sent will never be checked: forget them, or
        # their connections would never be pinged again.
        for connection in list(self.connections()):
            connection.ping_sent_at = None
        next_round = time() + period
        # Pong checks to come: (when, the connections pinged by a round).
        checks: deque[tuple[float, list[SidecarConnection]]] = deque()
        while True:
            if checks and checks[0][0] <= next_round:
                when, pinged = checks.popleft()
                await self.sleep(max(0.0, when - time()))
                self.check_pongs(pinged, time())
                continue
            await self.sleep(max(0.0, next_round - time()))
            # A fixed cadence: the rounds' own durations do not add up.
            next_round += period
            pinged = await self.ping_round(time)
            if pinged and self.timeout:
                checks.append((time() + self.timeout, pinged))
            if next_round < time():
                # The round took longer than the period (a busy or blocked
                # loop): rest a period rather than run rounds back to back.
                next_round = time() + period

    async def ping_round(
        self, time: Callable[[], float] | None = None
    ) -> list[SidecarConnection]:
        """Deal with each open connection; return those pinged."""
        time = time or asyncio.get_running_loop().time
        timeout, interval = self.timeout, self.interval
        # Each connection's data is unpredictable, as websockets' own pings':
        # a client must read its ping on that connection to answer it. Keyed
        # hashes of one random key per round cost less than a random draw each.
        key = os.urandom(16)
        pinged = []
        now = time()
        for number, connection in enumerate(list(self.connections())):
            if number % PINGS_PER_STEP == 0:
                # Let events through: 10,000 pings take tens of ms of writes.
                await asyncio.sleep(0)
                now = time()
            if not connection.is_open:
                continue
            if timeout and connection.stalled_for(now) >= timeout:
                self.abort_stalled(connection)
            elif connection.expires_at is not None and now >= connection.expires_at:
                logger.info(
                    "Connection %s: reached WS_MAX_CONNECTION_AGE", connection.id
                )
                self.unregister(connection)
                connection.close_soon(*CONNECTION_EXPIRED)
            elif not interval or (timeout and connection.ping_sent_at is not None):
                continue
            else:
                data = blake2b(
                    id(connection).to_bytes(8, "little"), key=key, digest_size=4
                ).digest()
                if connection.send_keepalive_ping(PING_HEADER + data, data, now):
                    pinged.append(connection)
        return pinged

    def check_pongs(self, pinged: list[SidecarConnection], now: float) -> None:
        """Close those of ``pinged`` whose ping is unanswered after the timeout."""
        assert self.timeout
        late = now - self.timeout + EARLY
        for connection in pinged:
            if connection.is_open and connection.ping_sent_before(late):
                logger.info("Connection %s: no pong in time", connection.id)
                self.unregister(connection)
                connection.close_soon(*KEEPALIVE_TIMEOUT)

    def abort_stalled(self, connection: SidecarConnection) -> None:
        """Abort a connection whose output has not drained for the timeout:
        its client would never read a close frame."""
        self.counters.slow_client_closes += 1
        logger.warning(
            "Connection %s aborted: its output has not drained for %g s "
            "(%d bytes pending)",
            connection.id,
            self.timeout,
            connection.transport.get_write_buffer_size(),
        )
        self.unregister(connection)
        connection.abort()
