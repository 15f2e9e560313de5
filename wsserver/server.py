"""The WebSocket server: accept, sign in, register, serve, shut down cleanly.

The serving and connection-handling layer. Each connection sends its token
as its first message (:mod:`wsserver.signin`); once authenticated it is
registered with the :mod:`delivery core <wsserver.delivery>` and receives
every bus event its user may see (:mod:`wsserver.fanout` writes them), after
the events it missed if it resumes (:mod:`wsserver.resuming`), until it
closes. Access changes are applied by :mod:`wsserver.rechecks`, pings by
:mod:`wsserver.keepalive`, HTTP endpoints by :mod:`wsserver.endpoints`.

Nothing shared ever waits on one client: writes, pings and closes return at
once (see :mod:`wsserver.connection`); only a connection's own coroutine waits
for it, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .backfill import ChannelBackfill
from .bus import Subscriber
from .catchup import Catchup
from .closes import INTERNAL_ERROR, SERVER_RESTART
from .connection import CLOSE_TIMEOUT, SidecarConnection, connection_class
from .counters import Counters
from .cursors import MAX_CURSOR_LENGTH
from .database import Batcher, Database
from .delivery import Delivery
from .endpoints import Handshakes, HealthEndpoints, MetricsEndpoint
from .fanout import Fanout
from .gcschedule import GcScheduler
from .history import History
from .keepalive import Keepalive
from .limits import Admission, Slots
from .metrics import Gauges, Metrics
from .partitions import Interest
from .rechecks import Rechecks
from .resuming import Resuming
from .routing import Principal, Router
from .shards import ShardedSubscriber
from .signin import SignIn
from .supervision import cancel, start_supervised
from .wire import control_channel, history_key

if TYPE_CHECKING:
    from .auth import Authenticator
    from .config import Config

__all__ = ["Sidecar"]

logger = logging.getLogger("wsserver.server")

# Shared by every connection once its handshake is done (never modified).
NO_HEADERS = Headers()


class Sidecar:
    """The sidecar process: a websockets server fed by a Redis subscriber."""

    def __init__(
        self, config: Config, authenticator: Authenticator, database: Database
    ) -> None:
        self.config = config
        self.counters = counters = Counters()
        redis = config.redis
        # On a Redis Cluster: the partitions the connections follow.
        self.interest = Interest() if redis.mode == "cluster" else None
        self.router: Router[SidecarConnection] = Router(self.interest)
        self.delivery = Delivery(
            self.router,
            max_buffer=config.max_buffer,
            max_event_size=config.max_event_size,
        )
        self.catchup = Catchup(counters)
        self.fanout = Fanout(
            self.delivery,
            counters,
            compression=config.compression is not None,
            catchup=self.catchup,
        )
        self.rechecks = Rechecks(
            self.delivery,
            database,
            authenticator,
            counters,
            disconnect=self.fanout.disconnect,
            interval=config.recheck_interval,
        )
        self.subscriber: Subscriber | ShardedSubscriber
        if self.interest is not None:
            self.subscriber = ShardedSubscriber(
                redis,
                config.channel,
                self.interest,
                self.catchup,
                on_message=self.on_bus_message,
                on_backfill=self.fanout.backfill,
                on_release=self.fanout.release,
                on_gap=self.on_gap,
                on_control=self.rechecks.on_control_message,
                on_subscribed=self.rechecks.on_resubscribed,
                history_limit=config.history_size,
                counters=counters,
            )
            history = self.subscriber.resume_history()
        else:
            history = History(
                redis.first_url,
                history_key(config.channel),
                config.history_size,
                client=redis.async_client(socket_timeout=5, socket_connect_timeout=5),
            )
            self.subscriber = Subscriber(
                redis.describe(),
                config.channel,
                self.on_bus_message,
                on_control=self.rechecks.on_control_message,
                control_channel=control_channel(config.channel),
                on_subscribed=self.rechecks.on_resubscribed,
                counters=counters,
                catchup=ChannelBackfill(
                    history,
                    self.catchup,
                    send=self.fanout.backfill,
                    on_gap=self.on_gap,
                    counters=counters,
                ),
                connect=redis.async_client,
            )
        self.resume = Resuming(
            self.delivery,
            self.fanout,
            history,
            Slots(config.max_replays, config.max_replays_per_user),
            timeout=config.replay_timeout,
            disconnect=self.fanout.disconnect,
            after_gap=None if self.interest is None else self._send_cursor_to,
        )
        authentications = Batcher(
            database,
            authenticator.authenticate_explained,
            concurrency=config.db_threads,
            counters=counters,
        )
        self.gc_scheduler = GcScheduler(counters=counters)
        self.sign_in = SignIn(
            authentications,
            self.rechecks,
            self.delivery,
            counters,
            timeout=config.auth_timeout,
            max_connections_per_user=config.max_connections_per_user,
            max_connection_age=config.max_connection_age,
            on_registered=self.gc_scheduler.opened,
            subscriptions=None if self.interest is None else self,
        )
        admission = Admission(
            config.max_authenticating, config.max_authenticating_per_address
        )
        self.handshakes = Handshakes(
            HealthEndpoints(database, lambda: self.subscriber.subscribed),
            admission,
            counters,
            # all_connections counts open connections, not this handshake.
            open_connections=lambda: len(self.server.all_connections),  # type: ignore[union-attr]
            max_connections=config.max_connections,
            trusted_proxies=config.trusted_proxies,
        )
        self.keepalive = Keepalive(
            lambda: self.server.connections if self.server is not None else (),
            interval=config.ping_interval,
            timeout=config.ping_timeout,
            unregister=self.delivery.unregister,
            counters=counters,
        )
        self.metrics = Metrics(
            counters,
            Gauges(
                connections=self.router.__len__,
                connected_users=lambda: len(self.router.users()),
                authenticating=admission.__len__,
                authentications_queued=lambda: authentications.queued,
                bus_subscribed=lambda: self.subscriber.subscribed,
                bus_partitions=self._partitions_subscribed,
                gc_frozen_objects=lambda: self.gc_scheduler.frozen_objects,
            ),
        )
        self.server: Server | None = None

    @property
    def max_message_size(self) -> int:
        """WS_MAX_MESSAGE_SIZE, raised on a Redis Cluster to fit a resume's
        cursor (up to 256 ids, see wsserver.cursors) beside the token."""
        if self.interest is None:
            return self.config.max_message_size
        return max(self.config.max_message_size, MAX_CURSOR_LENGTH + 2048)

    def on_bus_message(
        self, payload: bytes, partition: int | str | None = None
    ) -> None:
        """Send an event to every connection whose user may see it."""
        event = self.fanout.receive(payload, partition)
        if event is not None:
            self.metrics.observe_delay(event.id)

    def on_gap(self, stream: Hashable, position: str) -> None:
        """Events of a stream were missed and are gone from its history: tell
        the connections that follow it to reload."""
        gap = json.dumps({"type": "resume_gap", "last_event_id": position}).encode()
        interest = self.interest
        for connection, principal in list(self.router.items()):
            if interest is None or stream in interest.partitions(principal):
                self.fanout.write(connection, [gap])

    def _send_cursor_to(self, connection: SidecarConnection) -> None:
        if connection in self.router:
            self._send_cursor(connection, self.router.principal(connection))

    def _send_cursor(self, connection: SidecarConnection, principal: Principal) -> None:
        """On a Redis Cluster, tell a new connection where it starts in each
        partition it follows (see wsserver.cursors), so that a resume is
        exact in partitions it will have received nothing from."""
        assert self.interest is not None
        positions = []
        for partition in sorted(self.interest.partitions(principal), key=str):
            position = self.catchup.position(partition)
            if position is not None:
                positions.append(f"{partition}:{position[0]}-{position[1]}")
        if positions:
            message = {"type": "cursor", "cursor": ",".join(positions)}
            self.fanout.write(connection, [json.dumps(message).encode()])

    async def wait(self, principal: Principal) -> None:
        """Hold the partitions a principal follows, and return once they are
        subscribed to (see SignIn; holding nothing if it raises)."""
        assert self.interest is not None
        assert isinstance(self.subscriber, ShardedSubscriber)
        partitions = self.interest.partitions(principal)
        self.interest.pin(partitions)
        try:
            await self.subscriber.wait_for(partitions)
        except BaseException:
            self.interest.unpin(partitions)
            raise

    def release(self, principal: Principal) -> None:
        """Stop holding a principal's partitions (see wait)."""
        assert self.interest is not None
        self.interest.unpin(self.interest.partitions(principal))

    def _partitions_subscribed(self) -> int:
        if isinstance(self.subscriber, ShardedSubscriber):
            return len(self.subscriber.subscribed_partitions())
        return 0

    # Connections

    async def handler(self, connection: SidecarConnection) -> None:
        # This coroutine lives as long as the connection: it holds little.
        opened = time.monotonic()
        # The handshake's headers are of no further use: drop them (browsers'
        # cookies included, they are kilobytes per connection).
        connection.request.headers = connection.response.headers = NO_HEADERS
        principal = None
        try:
            try:
                registered = await self.sign_in(connection)
            finally:
                self.handshakes.release(connection)
            if registered is None:
                return
            principal, last_event_id = registered
            del registered
            if last_event_id is not None:
                await self.resume(connection, principal.user_id, last_event_id)
                del last_event_id
            elif self.interest is not None:
                self._send_cursor(connection, principal)
            # What clients send after their first message is dropped as it
            # arrives (see SidecarConnection): wait for the end.
            await connection.wait_closed()
        except ConnectionClosed:
            pass
        except Exception:
            # websockets would close with 1011 itself, but its close() waits
            # for a client that stopped reading, forever.
            logger.exception("Connection %s: unexpected error", connection.id)
            connection.close_soon(*INTERNAL_ERROR)
        finally:
            self.delivery.unregister(connection)
            if principal is not None:
                logger.info(
                    "Connection %s closed for user %s after %.1f s: %s",
                    connection.id,
                    principal.user_id,
                    time.monotonic() - opened,
                    connection.close_code,
                )

    def _connection_lost(self, connection: SidecarConnection) -> None:
        self.handshakes.release(connection)  # if it never reached the handler
        self.gc_scheduler.closed(len(self.router))

    # Life cycle

    async def run(self, stop: asyncio.Future[None] | None = None) -> None:
        """Serve until ``stop`` completes or SIGTERM / SIGINT arrives."""
        loop = asyncio.get_running_loop()
        if stop is None:
            stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _set_result, stop)
        config = self.config
        if not config.allowed_origins:
            logger.warning(
                "WS_ALLOWED_ORIGINS is not set: pages on any site may open "
                "connections (cross-site WebSocket hijacking is not blocked)"
            )
        self.gc_scheduler.start()
        self.server = await serve(
            self.handler,
            config.host,
            config.port,
            # Browsers always send Origin; None lets other clients connect.
            origins=[*config.allowed_origins, None] if config.allowed_origins else None,
            compression=config.compression,
            process_request=self.handshakes.process_request,
            # One keepalive loop for every connection (see wsserver.keepalive)
            # rather than a task per connection: it saves memory per connection.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            max_size=self.max_message_size,
            max_queue=4,
            server_header=None,
            # WS_WORKERS: processes share the port; the kernel spreads clients.
            reuse_port=config.workers > 1,
            # Room for a reconnection storm: the kernel caps it at somaxconn.
            backlog=4096,
            create_connection=connection_class(
                max_buffer=config.max_buffer,
                made=self.gc_scheduler.opened,
                lost=self._connection_lost,
            ),
        )
        metrics_server = None
        if config.metrics_port:
            metrics = MetricsEndpoint(self.metrics)
            metrics_server = await metrics.serve(
                config.metrics_host, config.metrics_port
            )
        else:
            logger.info("Metrics are off: set WS_METRICS_PORT to serve them")
        loops = {"subscriber": self.subscriber.run, "keepalive": self.keepalive.run}
        if config.recheck_interval:
            loops["periodic rechecks"] = self.rechecks.run_periodically
        tasks = start_supervised(loops, self.counters.task_restarts)
        logger.info("Listening on ws://%s:%d/", config.host, config.port)
        try:
            await stop
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await self.shutdown()
            if metrics_server is not None:
                metrics_server.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await metrics_server.wait_closed()
            self.gc_scheduler.stop()
            await cancel(tasks)
            # Shutting down: a Redis that hangs does not hold the exit.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self.resume.history.close()

    async def shutdown(self) -> None:
        """Close every connection with 1012, aborting those that hang."""
        server = self.server
        if server is None:
            return
        # No new connections first (handshakes under way get HTTP 503).
        server.close(close_connections=False)
        await asyncio.sleep(0)
        logger.info("Shutting down: closing %d connections", len(server.connections))
        timeout = self.config.shutdown_timeout
        for connection in list(server.connections):
            # Aborted below once the timeout is over, if not closed by then.
            connection.close_soon(*SERVER_RESTART, timeout=timeout + 1)
        try:
            async with asyncio.timeout(timeout):
                await server.wait_closed()
        except TimeoutError:
            # Clients that stopped reading never read the close frame.
            stragglers = [
                connection
                for connection in server.all_connections
                if connection.protocol.state is not State.CLOSED
            ]
            logger.warning(
                "Aborting %d connections that did not close in time", len(stragglers)
            )
            for connection in stragglers:
                connection.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await server.wait_closed()
        logger.info("Shut down")


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
