"""The WebSocket server: authenticate, register, broadcast, shut down cleanly.

A thin asyncio layer around the routing core. Each connection sends its token
as its first message; once authenticated it is registered in the
:class:`~wsserver.routing.Router` and receives every bus event its user may
see, until it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import signal
import time
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import DATA_OPCODES, CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from .bus import Subscriber
from .collector import Collector
from .control import GroupChanged, InvalidControl, UsersChanged, parse_control
from .database import Batcher, Database, DatabaseUnavailable
from .events import InvalidEvent, event_id_key, parse_event
from .fanout import Fanout
from .hello import InvalidHello, parse_hello
from .history import History, HistoryUnavailable, Missed
from .metrics import Metrics
from .routing import Router
from .wire import control_channel, history_key

if TYPE_CHECKING:
    from .auth import Authenticator, Principal
    from .config import Config

__all__ = ["Sidecar"]

logger = logging.getLogger("wsserver.server")

# Every close the sidecar initiates, in one place (the README's table).
# 1011: get a new token. 1012, 1013: reconnect later. 1008: do not reconnect.
AUTHENTICATION_FAILED = (CloseCode.INTERNAL_ERROR, "authentication failed")
AUTHENTICATION_TIMEOUT = (CloseCode.POLICY_VIOLATION, "authentication timeout")
TOO_MANY_CONNECTIONS = (CloseCode.POLICY_VIOLATION, "too many connections")
TRY_AGAIN_LATER = (CloseCode.TRY_AGAIN_LATER, "try again later")
CLIENT_TOO_SLOW = (CloseCode.TRY_AGAIN_LATER, "client too slow")
SERVER_RESTART = (CloseCode.SERVICE_RESTART, "server restarting")
ACCESS_REVOKED = (CloseCode.POLICY_VIOLATION, "access revoked")
KEEPALIVE_TIMEOUT = (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

READINESS_CACHE_SECONDS = 2.0
# Keepalive pings sent before the event loop gets to run something else.
PINGS_PER_STEP = 100
# How long a client that stopped reading gets to complete the closing
# handshake before its connection is aborted.
SLOW_CLOSE_TIMEOUT = 5.0
# How long an access change may take to recheck before the users concerned
# are disconnected (to reconnect and authenticate again) rather than trusted.
RECHECK_TIMEOUT = 5.0


# Shared by every connection once its handshake is done (never modified).
NO_HEADERS = Headers()


class SidecarConnection(ServerConnection):
    """A connection that drops every message after the first (the token).

    Clients have nothing to say after their token. Dropping messages as they
    arrive means that what they send never piles up, and that no coroutine
    needs to wait on ``recv()`` for the lifetime of each connection.
    """

    first_message_received = False

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            if self.first_message_received:
                return
            if event.fin:
                self.first_message_received = True
        super().process_event(event)


class Sidecar:
    """The sidecar process: a websockets server fed by a Redis subscriber."""

    def __init__(
        self, config: Config, authenticator: Authenticator, database: Database
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.database = database
        self.router: Router[ServerConnection] = Router()
        self.fanout = Fanout(
            self.router,
            max_buffer=config.max_buffer,
            compression=config.compression is not None,
            on_slow=self.close_slow_client,
        )
        self.subscriber = Subscriber(
            config.redis_url,
            config.channel,
            self.on_bus_message,
            on_control=self.on_control_message,
            control_channel=control_channel(config.channel),
        )
        self.history = History(
            config.redis_url, history_key(config.channel), config.history_size
        )
        self.principals: dict[ServerConnection, Principal] = {}
        self.authentications = Batcher(
            database,
            authenticator.authenticate_many,
            concurrency=config.db_threads,
        )
        self.collector = Collector()
        self.metrics = Metrics()
        self.metrics.register(self)
        # Access changes, counted, so that a connection whose authentication
        # overlapped one is rechecked (it may have read the old rows).
        self._changes = 0
        self._user_changes: dict[str, int] = {}
        self._group_change = 0
        self.server: Server | None = None
        self.slow_closes = 0
        self._database_ready = (float("-inf"), False)
        self._background: set[asyncio.Task[None]] = set()

    # Events

    def on_bus_message(self, payload: bytes) -> None:
        """Send an event to every connection whose user may see it."""
        try:
            event = parse_event(payload)
        except InvalidEvent as exc:
            self.metrics.events["invalid"] += 1
            logger.warning("Skipped a bus message: %s: %.100r", exc, payload)
            return
        self.metrics.events["routed"] += 1
        self.metrics.observe_delay(event.id)
        self.fanout.submit(event)

    def on_control_message(self, payload: bytes):
        """Recheck the connected users whose access changed.

        Returns an awaitable when there is work to do: the subscriber waits
        for it before the next event, so new permissions apply to that event.
        """
        try:
            change = parse_control(payload)
        except InvalidControl as exc:
            logger.warning("Skipped a control message: %s: %.100r", exc, payload)
            return None
        self._note_change(change)
        connected = set(self.router.users())
        if isinstance(change, GroupChanged):
            if not connected:
                return None
            group_id = change.group_id

            def recheck():
                members = self.authenticator.group_members(group_id) & connected
                return self.authenticator.reauthenticate(members)

            return self._recheck(recheck, f"group {group_id}", set())
        user_ids = change.user_ids & connected
        if not user_ids:
            return None
        return self._recheck(
            lambda: self.authenticator.reauthenticate(user_ids),
            f"users {', '.join(sorted(user_ids))}",
            user_ids,
        )

    def _note_change(self, change: UsersChanged | GroupChanged) -> None:
        self._changes += 1
        if isinstance(change, GroupChanged) or len(self._user_changes) > 10_000:
            self._user_changes.clear()
            self._group_change = self._changes
        else:
            for user_id in change.user_ids:
                self._user_changes[user_id] = self._changes

    def _changed_since(self, user_id: str, count: int) -> bool:
        return max(self._group_change, self._user_changes.get(user_id, 0)) > count

    async def _recheck(self, work, what: str, user_ids: set[str]) -> None:
        try:
            async with asyncio.timeout(RECHECK_TIMEOUT):
                principals = await self.database.run(work)
        except (DatabaseUnavailable, TimeoutError) as exc:
            # Access may have been revoked and cannot be checked: disconnect
            # the users concerned; they authenticate again when they can.
            logger.warning("Cannot recheck %s: %s", what, exc or "timeout")
            for user_id in user_ids:
                for connection in self.router.connections_of(user_id):
                    self._disconnect(connection, TRY_AGAIN_LATER)
            return
        for user_id, principal in principals.items():
            self._apply(user_id, principal)

    def _apply(self, user_id: str, principal: Principal | None) -> None:
        for connection in self.router.connections_of(user_id):
            previous = self.principals.get(connection)
            revoked = principal is None or (
                previous is not None and previous.credentials != principal.credentials
            )
            if revoked:
                logger.info(
                    "Connection %s: access revoked for user %s", connection.id, user_id
                )
                self.metrics.revocations += 1
                self._disconnect(connection, ACCESS_REVOKED)
            else:
                assert principal is not None
                self.router.update(connection, principal.permissions)
                self.principals[connection] = principal

    def _disconnect(self, connection: ServerConnection, close: tuple[int, str]) -> None:
        self.router.remove(connection)
        self.fanout.forget(connection)
        self._spawn(_close_or_abort(connection, *close))

    def close_slow_client(self, connection: ServerConnection) -> None:
        """Close a connection that stopped reading; abort it if that hangs."""
        self.slow_closes += 1
        logger.warning(
            "Connection %s closed: client too slow (%d bytes pending)",
            connection.id,
            connection.transport.get_write_buffer_size(),
        )
        self._spawn(_close_or_abort(connection, *CLIENT_TOO_SLOW))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Connections

    async def handler(self, connection: ServerConnection) -> None:
        # This coroutine lives as long as the connection: it holds little.
        opened = time.monotonic()
        # The handshake's headers are of no further use: drop them (browsers'
        # cookies included, they are kilobytes per connection).
        connection.request.headers = connection.response.headers = NO_HEADERS
        registered = await self._register(connection)
        if registered is None:
            return
        user_id, last_event_id = registered
        del registered
        try:
            if last_event_id is not None:
                await self._resume(connection, last_event_id)
                del last_event_id
            # What clients send after their first message is dropped as it
            # arrives (see SidecarConnection): wait for the end.
            await connection.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            self.router.remove(connection)
            self.fanout.forget(connection)
            self.principals.pop(connection, None)
            logger.info(
                "Connection %s closed for user %s after %.1f s: %s",
                connection.id,
                user_id,
                time.monotonic() - opened,
                connection.close_code,
            )

    async def _register(
        self, connection: ServerConnection
    ) -> tuple[str, str | None] | None:
        """Authenticate a connection and route events to it.

        Returns its user id and the event id to resume after, or None when
        the connection was refused (and closed).
        """
        authenticated = await self._authenticate(connection)
        if authenticated is None:
            return None
        principal, hello, changes = authenticated
        user_connections = self.router.connections_of(principal.user_id)
        if len(user_connections) >= self.config.max_connections_per_user:
            logger.warning(
                "Connection %s refused: user %s has %d connections",
                connection.id,
                principal.user_id,
                len(user_connections),
            )
            self.metrics.authentications["limited"] += 1
            await connection.close(*TOO_MANY_CONNECTIONS)
            return None
        self.metrics.authentications["success"] += 1
        self.router.add(connection, principal.user_id, principal.permissions)
        self.principals[connection] = principal
        self.collector.opened()
        if self._changed_since(principal.user_id, changes):
            user_ids = {principal.user_id}
            self._spawn(
                self._recheck(
                    lambda: self.authenticator.reauthenticate(user_ids),
                    f"user {principal.user_id}",
                    user_ids,
                )
            )
        logger.info(
            "Connection %s opened for user %s", connection.id, principal.user_id
        )
        return principal.user_id, hello.last_event_id

    async def _authenticate(self, connection: ServerConnection):
        deadline = asyncio.get_running_loop().time() + self.config.auth_timeout
        try:
            async with asyncio.timeout_at(deadline):
                token = await connection.recv()
        except TimeoutError:
            self.metrics.authentications["timeout"] += 1
            await connection.close(*AUTHENTICATION_TIMEOUT)
            return None
        except ConnectionClosed:  # includes a first frame over max_size: 1009
            return None
        if not isinstance(token, str):
            self.metrics.authentications["failure"] += 1
            await connection.close(*AUTHENTICATION_FAILED)
            return None
        try:
            hello = parse_hello(token)
        except InvalidHello as exc:
            logger.info(
                "Connection %s sent an invalid first message: %s", connection.id, exc
            )
            self.metrics.authentications["failure"] += 1
            await connection.close(*AUTHENTICATION_FAILED)
            return None
        changes = self._changes
        try:
            async with asyncio.timeout_at(deadline):
                principal = await self.authentications.call(hello.token)
        except (DatabaseUnavailable, TimeoutError) as exc:
            logger.warning(
                "Database unavailable, connection %s told to retry: %s",
                connection.id,
                exc or "timeout",
            )
            self.metrics.authentications["unavailable"] += 1
            await connection.close(*TRY_AGAIN_LATER)
            return None
        except Exception:
            logger.exception("Authentication crashed for connection %s", connection.id)
            self.metrics.authentications["failure"] += 1
            await connection.close(*AUTHENTICATION_FAILED)
            return None
        if principal is None:
            logger.info("Authentication failed for connection %s", connection.id)
            self.metrics.authentications["failure"] += 1
            await connection.close(*AUTHENTICATION_FAILED)
            return None
        return principal, hello, changes

    async def _resume(self, connection: ServerConnection, last_event_id: str) -> None:
        """Send the events missed since ``last_event_id``, then live ones.

        Live events are held from before the history is read until the replay
        is done; those the replay already included are dropped by id, so there
        is no gap and no duplicate. Replayed events are filtered with the
        user's permissions as they are now.
        """
        self.fanout.hold(connection)
        try:
            try:
                missed = await self.history.after(last_event_id)
            except HistoryUnavailable:
                missed = Missed([], gap=True)
            if missed.gap:
                await connection.send(
                    json.dumps({"type": "resume_gap", "last_event_id": last_event_id})
                )
            position = event_id_key(last_event_id)
            for event_id, payload in missed.events:
                position = event_id_key(event_id)
                if connection not in self.router:  # revoked meanwhile
                    break
                try:
                    event = parse_event(payload)
                except InvalidEvent:
                    continue
                if self.router.permissions(connection).allows(event.content_type_id):
                    await connection.send(payload, text=True)
            while held := self.fanout.take_held(connection):
                for event in held:
                    key = event_id_key(event.id)
                    if key is None or key > position:
                        await connection.send(event.payload, text=True)
        except BaseException:
            self.fanout.forget(connection)
            raise
        else:
            self.fanout.release(connection, position)

    # HTTP endpoints on the WebSocket port

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            return await self._readiness(connection)
        assert self.server is not None
        # all_connections counts open connections, not this handshake.
        if len(self.server.all_connections) >= self.config.max_connections:
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n"
            )
        return None

    async def _readiness(self, connection: ServerConnection) -> Response:
        problems = []
        if not self.subscriber.subscribed:
            problems.append("not subscribed to Redis")
        if not await self._database_answers():
            problems.append("database does not answer")
        if problems:
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "; ".join(problems) + "\n"
            )
        return connection.respond(http.HTTPStatus.OK, "ready\n")

    async def _database_answers(self) -> bool:
        checked_at, answers = self._database_ready
        now = time.monotonic()
        if now - checked_at < READINESS_CACHE_SECONDS:
            return answers
        try:
            async with asyncio.timeout(READINESS_CACHE_SECONDS):
                await self.database.run(_select_one)
        except (DatabaseUnavailable, TimeoutError):
            answers = False
        else:
            answers = True
        self._database_ready = (now, answers)
        return answers

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
        self.collector.start()
        self.server = await serve(
            self.handler,
            config.host,
            config.port,
            # Browsers always send Origin; None lets other clients connect.
            origins=[*config.allowed_origins, None] if config.allowed_origins else None,
            compression=config.compression,
            process_request=self.process_request,
            # One keepalive loop for every connection (see _keepalive) rather
            # than a task per connection: it saves memory per connection.
            ping_interval=None,
            ping_timeout=None,
            max_size=config.max_message_size,
            max_queue=4,
            server_header=None,
            # WS_WORKERS: processes share the port; the kernel spreads clients.
            reuse_port=config.workers > 1,
            # Room for a reconnection storm: the kernel caps it at somaxconn.
            backlog=4096,
            create_connection=self._connection_class(),
        )
        if config.metrics_port:
            start_http_server(
                config.metrics_port, config.metrics_host, registry=self.metrics.registry
            )
            logger.info(
                "Metrics on http://%s:%d/metrics",
                config.metrics_host,
                config.metrics_port,
            )
        else:
            logger.info("Metrics are off: set WS_METRICS_PORT to serve them")
        subscriber = asyncio.create_task(self.subscriber.run(), name="subscriber")
        keepalive = asyncio.create_task(self._keepalive(), name="keepalive")
        logger.info("Listening on ws://%s:%d/", config.host, config.port)
        try:
            await stop
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await self.shutdown()
            self.collector.stop()
            for task in (subscriber, keepalive):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.history.close()

    def _connection_class(self) -> type[SidecarConnection]:
        """Connections that report their opening and closing to the collector."""
        collector, router = self.collector, self.router

        class Connection(SidecarConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                collector.opened()

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                collector.closed(len(router))

        return Connection

    async def _keepalive(self) -> None:
        """Ping every connection each WS_PING_INTERVAL; close those that don't pong.

        As websockets' own keepalive, which would run one task per connection.
        """
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        if not interval:
            return
        assert self.server is not None
        while True:
            await asyncio.sleep(interval)
            waiting = []
            for number, connection in enumerate(list(self.server.connections)):
                if number % PINGS_PER_STEP == 0:
                    # Let events through: 10,000 pings take ~100 ms of writes.
                    await asyncio.sleep(0)
                if connection.protocol.state is not State.OPEN:
                    continue
                with contextlib.suppress(ConnectionClosed):
                    waiting.append((connection, await connection.ping()))
            if not timeout or not waiting:
                continue
            await asyncio.sleep(timeout)
            for connection, pong in waiting:
                if not pong.done() and connection.protocol.state is State.OPEN:
                    logger.info("Connection %s: no pong in time", connection.id)
                    self._spawn(_close_or_abort(connection, *KEEPALIVE_TIMEOUT))

    async def shutdown(self) -> None:
        """Close every connection with 1012, aborting those that hang."""
        server = self.server
        if server is None:
            return
        logger.info("Shutting down: closing %d connections", len(server.connections))
        server.close(True, *SERVER_RESTART)
        try:
            async with asyncio.timeout(self.config.shutdown_timeout):
                await server.wait_closed()
        except TimeoutError:
            # Clients that stopped reading hold close() until their buffer
            # drains, which may be never.
            stragglers = list(server.all_connections)
            logger.warning(
                "Aborting %d connections that did not close in time", len(stragglers)
            )
            for connection in stragglers:
                connection.transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await server.wait_closed()
        logger.info("Shut down")


async def _close_or_abort(connection: ServerConnection, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(SLOW_CLOSE_TIMEOUT):
            await connection.close(code, reason)
    except TimeoutError:
        connection.transport.abort()


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _select_one() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
