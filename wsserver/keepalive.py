"""Keepalive: one loop for every connection, that never waits on any of them.

Each round, every open connection is either

- aborted, when its output has not drained for ``WS_PING_TIMEOUT`` (the
  client stopped reading: a ping or a close frame would never reach it);
- closed, when it is past its maximum age (``WS_MAX_CONNECTION_AGE``), so that
  its client authenticates again;
- or sent a ping, queued without waiting. Those that have not answered
  ``WS_PING_TIMEOUT`` later are closed (and aborted if the close hangs).

As websockets' own keepalive, which would run one task per connection, but
with one loop: it saves memory per connection, and one client that stopped
reading cannot hold the pings of the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .closes import CONNECTION_EXPIRED, KEEPALIVE_TIMEOUT
from .connection import SidecarConnection
from .counters import Counters

__all__ = ["Keepalive"]

logger = logging.getLogger("wsserver.server")

# Keepalive pings sent before the event loop gets to run something else.
PINGS_PER_STEP = 100


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

    async def run(self) -> None:
        """Run rounds until cancelled. Without pings, rounds still catch
        stalled and expired connections."""
        period = self.interval or self.timeout or 20.0
        while True:
            await asyncio.sleep(period)
            waiting = await self.ping_round()
            if waiting and self.timeout:
                await asyncio.sleep(self.timeout)
                self.check_pongs(waiting)

    async def ping_round(
        self,
    ) -> list[tuple[SidecarConnection, asyncio.Future[float]]]:
        """Deal with each open connection; return the pings sent."""
        loop = asyncio.get_running_loop()
        waiting = []
        for number, connection in enumerate(list(self.connections())):
            if number % PINGS_PER_STEP == 0:
                # Let events through: 10,000 pings take ~100 ms of writes.
                await asyncio.sleep(0)
            if not connection.is_open:
                continue
            now = loop.time()
            if self.timeout and connection.stalled_for(now) >= self.timeout:
                self.abort_stalled(connection)
            elif connection.expires_at is not None and now >= connection.expires_at:
                logger.info(
                    "Connection %s: reached WS_MAX_CONNECTION_AGE", connection.id
                )
                self.unregister(connection)
                connection.close_soon(*CONNECTION_EXPIRED)
            elif self.interval:
                pong = connection.send_ping_now()
                if pong is not None:
                    waiting.append((connection, pong))
        return waiting

    def check_pongs(
        self, waiting: list[tuple[SidecarConnection, asyncio.Future[float]]]
    ) -> None:
        """Close the connections whose pong has not come."""
        for connection, pong in waiting:
            if not pong.done() and connection.is_open:
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
