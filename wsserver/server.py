"""The WebSocket server: authenticate, register, broadcast, shut down cleanly.

A thin asyncio layer around the routing core. Each connection sends its token
as its first message; once authenticated it is registered in the
:class:`~wsserver.routing.Router` and receives every bus event its user may
see, until it closes.

Nothing shared ever waits on one client: writes, pings and closes return at
once (see :mod:`wsserver.connection`); only a connection's own coroutine waits
for it, with a deadline. And nothing is trusted on doubt: a recheck of access
that fails or times out disconnects the users it could not confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import json
import logging
import random
import signal
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from .access import AccessChanges, affected_users
from .bus import Subscriber
from .collector import Collector
from .connection import CLOSE_TIMEOUT, SidecarConnection
from .control import GroupChanged, InvalidControl, parse_control
from .database import Batcher, Database, DatabaseUnavailable
from .events import InvalidEvent, event_id_key, parse_event
from .fanout import Fanout
from .hello import InvalidHello, parse_hello
from .history import History, HistoryUnavailable, Replay
from .keepalive import Keepalive
from .limits import Admission, Slots, address_key, client_address
from .metrics import CONTENT_TYPE, Metrics
from .resume import Position
from .routing import Router
from .wire import control_channel, history_key

if TYPE_CHECKING:
    from .auth import Authenticator
    from .config import Config
    from .routing import Principal

__all__ = ["Sidecar"]

logger = logging.getLogger("wsserver.server")

# Every close the sidecar initiates, in one place (the README's table).
# 1011: get a new token. 1012, 1013, 1000: reconnect later. 1008: do not
# reconnect.
AUTHENTICATION_FAILED = (CloseCode.INTERNAL_ERROR, "authentication failed")
AUTHENTICATION_TIMEOUT = (CloseCode.POLICY_VIOLATION, "authentication timeout")
TOO_MANY_CONNECTIONS = (CloseCode.POLICY_VIOLATION, "too many connections")
TRY_AGAIN_LATER = (CloseCode.TRY_AGAIN_LATER, "try again later")
CLIENT_TOO_SLOW = (CloseCode.TRY_AGAIN_LATER, "client too slow")
SERVER_RESTART = (CloseCode.SERVICE_RESTART, "server restarting")
ACCESS_REVOKED = (CloseCode.POLICY_VIOLATION, "access revoked")
KEEPALIVE_TIMEOUT = (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
CONNECTION_EXPIRED = (CloseCode.NORMAL_CLOSURE, "connection expired")
INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal error")

READINESS_CACHE_SECONDS = 2.0
# How long an access change may take to recheck before the users concerned
# are disconnected (to reconnect and authenticate again) rather than trusted.
RECHECK_TIMEOUT = 5.0
# Users rechecked with one query by periodic rechecks.
RECHECK_BATCH = 500
# Bytes of missed events queued at once by a resume, before it waits for the
# client to read them.
REPLAY_WRITE_SIZE = 64 * 1024
# A background task that crashed is restarted after this delay.
RESTART_DELAY = 1.0
# How far in the future (by this machine's clock) an event's id may be: ids
# are Redis' clock in milliseconds, so any later one was never a stream id.
MAX_CLOCK_SKEW = 3600.0


# Shared by every connection once its handshake is done (never modified).
NO_HEADERS = Headers()


class Sidecar:
    """The sidecar process: a websockets server fed by a Redis subscriber."""

    def __init__(
        self, config: Config, authenticator: Authenticator, database: Database
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.database = database
        self.router: Router[SidecarConnection] = Router()
        self.principals: dict[SidecarConnection, Principal] = {}
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
            on_subscribed=self.on_resubscribed,
        )
        self.history = History(
            config.redis_url, history_key(config.channel), config.history_size
        )
        self.authentications = Batcher(
            database,
            authenticator.authenticate_many,
            concurrency=config.db_threads,
        )
        self.admission = Admission(
            config.max_authenticating, config.max_authenticating_per_address
        )
        # Connections admitted and not authenticated yet: their address key.
        self._admitted: dict[SidecarConnection, str] = {}
        self.replays = Slots(config.max_replays, config.max_replays_per_user)
        self.changes = AccessChanges()
        self.keepalive = Keepalive(
            lambda: self.server.connections if self.server is not None else (),
            interval=config.ping_interval,
            timeout=config.ping_timeout,
            on_stalled=self.abort_stalled_client,
            on_expired=self.close_expired,
            on_no_pong=self.close_unresponsive,
        )
        self.collector = Collector()
        self.metrics = Metrics()
        self.metrics.register(self)
        self.server: Server | None = None
        self.slow_closes = 0
        # Reads of users' access, numbered as they start: a read never
        # replaces what a later one applied (see _apply). Remembered only
        # while a recheck's read is under way: only then can an older read
        # come after a newer one.
        self._reads = 0
        self._rechecks_reading: set[int] = set()
        self._applied: dict[str, int] = {}
        # When a recheck last found the database out of reach: rechecks fail
        # at once for RECHECK_TIMEOUT after, rather than each waiting for it.
        self._recheck_outage = float("-inf")
        self._database_ready = (float("-inf"), False)

    # Events

    def on_bus_message(self, payload: bytes) -> None:
        """Send an event to every connection whose user may see it."""
        try:
            if len(payload) > self.config.max_buffer:
                raise InvalidEvent(
                    f"{len(payload)} bytes, more than WS_MAX_BUFFER: no client "
                    "could be sent it"
                )
            event = parse_event(payload)
            key = event_id_key(event.id)
            if key is not None and key[0] > (time.time() + MAX_CLOCK_SKEW) * 1000:
                raise InvalidEvent(f"id {event.id} is in the future")
        except InvalidEvent as exc:
            self.metrics.events["invalid"] += 1
            logger.warning("Skipped a bus message: %s: %.100r", exc, payload)
            return
        self.metrics.events["routed"] += 1
        self.metrics.observe_delay(event.id)
        self.fanout.submit(event)

    def on_control_message(self, payload: bytes) -> Awaitable[None] | None:
        """Recheck the connected users whose access changed.

        Returns an awaitable when there is work to do: the subscriber waits
        for it before the next event, so new permissions apply to that event.
        """
        try:
            change = parse_control(payload)
        except InvalidControl as exc:
            self.metrics.events["invalid"] += 1
            logger.warning("Skipped a control message: %s: %.100r", exc, payload)
            return None
        self.changes.note(change)
        users = affected_users(change, self.router.users(), self.principals.values())
        if not users:
            return None
        if isinstance(change, GroupChanged):
            why = f"a change of group {change.group_id}"
        else:
            why = f"a change of user(s) {', '.join(sorted(users)[:10])}"
        return self.recheck(users, why)

    def on_resubscribed(self) -> Awaitable[None]:
        """Control messages may have been lost while Redis was away: recheck
        everyone before the next event (the subscriber waits for it), and
        confirm authentications that were in flight."""
        self.changes.note_everyone()
        return self.recheck_everyone("resubscribing to Redis")

    async def recheck_everyone(self, why: str) -> None:
        """Recheck every connected user, a batch of users per query."""
        users = sorted(self.router.users(), key=str)
        for start in range(0, len(users), RECHECK_BATCH):
            await self.recheck(set(users[start : start + RECHECK_BATCH]), why)

    async def recheck(self, user_ids: set[str], why: str) -> None:
        """Reload these users' access and apply it; disconnect, with 1013,
        those it could not confirm within RECHECK_TIMEOUT."""
        pending = set(user_ids)
        loop = asyncio.get_running_loop()
        try:
            if loop.time() - self._recheck_outage < RECHECK_TIMEOUT:
                raise DatabaseUnavailable("it did not answer the last recheck")
            async with asyncio.timeout(RECHECK_TIMEOUT):
                while pending:
                    since, read = self.changes.count, self._next_read()
                    self._rechecks_reading.add(read)
                    try:
                        principals = await self.database.run(
                            self.authenticator.reauthenticate, sorted(pending)
                        )
                    finally:
                        self._rechecks_reading.discard(read)
                    # Users whose access changed while this read ran may have
                    # been read before the change: read them again.
                    stale = {u for u in pending if self.changes.changed_since(u, since)}
                    for user_id in pending - stale:
                        self._apply(user_id, principals.get(user_id), read)
                    if not self._rechecks_reading:
                        self._applied.clear()
                    pending = stale
        except Exception as exc:
            # Access may have been revoked and cannot be checked: disconnect
            # the users concerned; they authenticate again when they can.
            if _is_outage(exc):
                self._recheck_outage = loop.time()
            (logger.warning if _is_outage(exc) else logger.exception)(
                "Cannot recheck %d user(s) after %s (%s): disconnecting them with 1013",
                len(pending),
                why,
                _reason(exc),
            )
            for user_id in pending:
                for connection in self.router.connections_of(user_id):
                    self._disconnect(connection, TRY_AGAIN_LATER)

    def _next_read(self) -> int:
        self._reads += 1
        return self._reads

    def _apply(self, user_id: str, principal: Principal | None, read: int) -> None:
        """Apply a read of a user's access, unless a later read was applied."""
        if read < self._applied.get(user_id, 0):
            return
        if self._rechecks_reading:
            self._applied[user_id] = read
        for connection in self.router.connections_of(user_id):
            previous = self.principals.get(connection)
            if principal is None or (
                previous is not None and previous.credentials != principal.credentials
            ):
                logger.info(
                    "Connection %s: access revoked for user %s", connection.id, user_id
                )
                self.metrics.revocations += 1
                self._disconnect(connection, ACCESS_REVOKED)
            else:
                self.router.update(connection, principal.permissions)
                self.principals[connection] = principal

    # Closing connections: none of these waits

    def _unregister(self, connection: SidecarConnection) -> None:
        """Stop routing anything to a connection."""
        self.router.remove(connection)
        self.fanout.forget(connection)
        self.principals.pop(connection, None)

    def _disconnect(
        self, connection: SidecarConnection, close: tuple[int, str]
    ) -> None:
        self._unregister(connection)
        connection.close_soon(*close)

    def close_slow_client(self, connection: SidecarConnection) -> None:
        """Close a connection that stopped reading; abort it if that hangs."""
        self.slow_closes += 1
        logger.warning(
            "Connection %s closed: client too slow (%d bytes pending)",
            connection.id,
            connection.transport.get_write_buffer_size(),
        )
        self._disconnect(connection, CLIENT_TOO_SLOW)

    def abort_stalled_client(self, connection: SidecarConnection) -> None:
        """Abort a connection whose output has not drained for WS_PING_TIMEOUT."""
        self.slow_closes += 1
        logger.warning(
            "Connection %s aborted: its output has not drained for %g s "
            "(%d bytes pending)",
            connection.id,
            self.config.ping_timeout,
            connection.transport.get_write_buffer_size(),
        )
        self._unregister(connection)
        connection.abort()

    def close_unresponsive(self, connection: SidecarConnection) -> None:
        logger.info("Connection %s: no pong in time", connection.id)
        self._disconnect(connection, KEEPALIVE_TIMEOUT)

    def close_expired(self, connection: SidecarConnection) -> None:
        logger.info("Connection %s: reached WS_MAX_CONNECTION_AGE", connection.id)
        self._disconnect(connection, CONNECTION_EXPIRED)

    def _refuse(
        self, connection: SidecarConnection, result: str, close: tuple[int, str]
    ) -> None:
        self.metrics.authentications[result] += 1
        connection.close_soon(*close)

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
                registered = await self._register(connection)
            finally:
                self._release_admission(connection)
            if registered is None:
                return
            principal, last_event_id = registered
            del registered
            if last_event_id is not None:
                await self._resume(connection, principal.user_id, last_event_id)
                del last_event_id
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
            self._unregister(connection)
            if principal is not None:
                logger.info(
                    "Connection %s closed for user %s after %.1f s: %s",
                    connection.id,
                    principal.user_id,
                    time.monotonic() - opened,
                    connection.close_code,
                )

    async def _register(
        self, connection: SidecarConnection
    ) -> tuple[Principal, str | None] | None:
        """Authenticate a connection and route events to it.

        Returns its principal and the event id to resume after, or None when
        the connection was refused (and is closing).
        """
        authenticated = await self._authenticate(connection)
        if authenticated is None:
            return None
        principal, last_event_id, read = authenticated
        if not connection.is_open:  # closed during authentication
            return None
        user_connections = self.router.connections_of(principal.user_id)
        if len(user_connections) >= self.config.max_connections_per_user:
            logger.warning(
                "Connection %s refused: user %s has %d connections",
                connection.id,
                principal.user_id,
                len(user_connections),
            )
            self._refuse(connection, "limited", TOO_MANY_CONNECTIONS)
            return None
        self.metrics.authentications["success"] += 1
        self.router.add(connection, principal.user_id, principal.permissions)
        self.principals[connection] = principal
        if self._rechecks_reading:
            # A recheck that read before this authentication must not undo it.
            applied = self._applied.get(principal.user_id, 0)
            self._applied[principal.user_id] = max(applied, read)
        if self.config.max_connection_age:
            # Spread over the last tenth of the age: clients that connected
            # together (after a restart) do not all reconnect together.
            connection.expires_at = connection.loop.time() + (
                self.config.max_connection_age * random.uniform(0.9, 1.0)
            )
        self.collector.opened()
        logger.info(
            "Connection %s opened for user %s", connection.id, principal.user_id
        )
        return principal, last_event_id

    async def _authenticate(
        self, connection: SidecarConnection
    ) -> tuple[Principal, str | None, int] | None:
        """The first message's principal, resume position and read number,
        confirmed against every access change that overlapped it; or None,
        refused."""
        deadline = asyncio.get_running_loop().time() + self.config.auth_timeout
        try:
            async with asyncio.timeout_at(deadline):
                token = await connection.recv()
        except TimeoutError:
            self._refuse(connection, "timeout", AUTHENTICATION_TIMEOUT)
            return None
        except ConnectionClosed:  # includes a first frame over max_size: 1009
            return None
        if not isinstance(token, str):
            self._refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        try:
            hello = parse_hello(token)
        except InvalidHello as exc:
            logger.info(
                "Connection %s sent an invalid first message: %s", connection.id, exc
            )
            self._refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        del token
        since, read = self.changes.count, self._next_read()
        try:
            async with asyncio.timeout_at(deadline):
                principal = await self.authentications.call(hello.token)
                # The query may have read rows that a change then replaced:
                # confirm before routing anything (not after).
                while principal is not None and self.changes.changed_since(
                    principal.user_id, since
                ):
                    since, read = self.changes.count, self._next_read()
                    confirmed = await self.database.run(
                        self.authenticator.reauthenticate, [principal.user_id]
                    )
                    principal = _same_credentials(
                        principal, confirmed.get(principal.user_id)
                    )
        except (DatabaseUnavailable, TimeoutError) as exc:
            logger.warning(
                "Database unavailable, connection %s told to retry: %s",
                connection.id,
                _reason(exc),
            )
            self._refuse(connection, "unavailable", TRY_AGAIN_LATER)
            return None
        except Exception:
            logger.exception("Authentication crashed for connection %s", connection.id)
            self._refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        if principal is None:
            logger.info("Authentication failed for connection %s", connection.id)
            self._refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        return principal, hello.last_event_id, read

    def _release_admission(self, connection: SidecarConnection) -> None:
        address = self._admitted.pop(connection, None)
        if address is not None:
            self.admission.release(address)

    # Resuming

    async def _resume(
        self, connection: SidecarConnection, user_id: str, last_event_id: str
    ) -> None:
        """Send the events missed since ``last_event_id``, then live ones.

        Live events are held from before the history is read until the replay
        is done; those the replay already included are dropped by id, so there
        is no gap and no duplicate. Replayed events are filtered with the
        user's permissions as they are now. The whole resume, waiting for its
        turn included, has WS_REPLAY_TIMEOUT; its writes, the same buffer
        bound as live events.
        """
        self.fanout.hold(connection)
        try:
            async with asyncio.timeout(self.config.replay_timeout):
                async with self.replays.taken(user_id):
                    if not connection.is_open:  # gone while it waited its turn
                        self.fanout.forget(connection)
                        return
                    position = await self._replay(connection, last_event_id)
                    while held := self.fanout.take_held(connection):
                        missed = [
                            (event.content_type_id, event.payload)
                            for event in held
                            if _after(event.id, position)
                        ]
                        if not await self._send(connection, missed):
                            break
        except TimeoutError:
            stalled = connection.paused_at is not None
            logger.warning(
                "Connection %s: resume not done within WS_REPLAY_TIMEOUT (%s)",
                connection.id,
                "the client is not reading" if stalled else "waiting for its turn",
            )
            self._disconnect(
                connection, CLIENT_TOO_SLOW if stalled else TRY_AGAIN_LATER
            )
        except HistoryUnavailable:
            self._disconnect(connection, TRY_AGAIN_LATER)
        except BaseException:
            self.fanout.forget(connection)
            raise
        else:
            self.fanout.release(connection, position)

    async def _replay(
        self, connection: SidecarConnection, last_event_id: str
    ) -> Position | None:
        """Send the missed events the user may see now; return the position
        the replay covers (None: nothing was replayed)."""
        try:
            replay = await self.history.plan(last_event_id)
        except HistoryUnavailable:
            replay = Replay(last_event_id, None, gap=True)
        if replay.gap:
            gap = {"type": "resume_gap", "last_event_id": last_event_id}
            self.fanout.write(connection, [json.dumps(gap).encode()])
        async for entries in self.history.entries(replay):
            missed = [
                (entry.content_type_id, entry.payload)
                for entry in entries
                if entry.content_type_id is not None
            ]
            if not await self._send(connection, missed):
                return replay.position
        return replay.position

    async def _send(
        self, connection: SidecarConnection, events: list[tuple[int, bytes]]
    ) -> bool:
        """Queue (content type, payload) events for one connection, a few at a
        time, each batch filtered with the user's permissions as they are when
        it is written; wait for the client to read in between. False once the
        connection is closing or no longer registered (revoked, too slow)."""
        limit = min(REPLAY_WRITE_SIZE, self.config.max_buffer // 2)
        start = 0
        while start < len(events):
            if connection not in self.router:
                return False
            permissions = self.router.permissions(connection)
            batch: list[bytes] = []
            size = 0
            while start < len(events) and size < limit:
                content_type_id, payload = events[start]
                start += 1
                # An event past the buffer bound could never be sent whole.
                if permissions.allows(content_type_id) and (
                    len(payload) <= self.config.max_buffer
                ):
                    batch.append(payload)
                    size += len(payload)
            if batch and not self.fanout.write(connection, batch):
                return False
            if connection.paused_at is not None:
                try:
                    await connection.drain()
                except Exception:
                    return False
        return connection.is_open and connection in self.router

    # HTTP endpoints on the WebSocket port

    async def process_request(
        self, connection: SidecarConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            return await self._readiness(connection)
        assert self.server is not None
        # all_connections counts open connections, not this handshake.
        if len(self.server.all_connections) >= self.config.max_connections:
            return self._unavailable(connection, "too many connections")
        # Proxies that add a header line of their own rather than append.
        forwarded = ", ".join(request.headers.get_all("X-Forwarded-For")) or None
        address = address_key(
            client_address(
                connection.remote_address[0],
                forwarded,
                self.config.trusted_proxies,
            )
        )
        if connection.connection_lost_waiter.done():
            # Gone already (e.g. reset while websockets answered a ping sent
            # with the request): connection_lost would never give it back.
            return self._unavailable(connection, "connection lost")
        refusal = self.admission.admit(address)
        if refusal is not None:
            logger.info("Handshake from %s refused: %s", address, refusal)
            return self._unavailable(connection, refusal)
        # Given back once the token is decided (see handler), or when the
        # socket is gone (see _connection_class), whatever comes first.
        self._admitted[connection] = address
        return None

    def _metrics_endpoint(
        self, connection: ServerConnection, request: Request
    ) -> Response:
        """GET /metrics on WS_METRICS_PORT; nothing else is served there."""
        if request.path.split("?", 1)[0] != "/metrics":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        body = self.metrics.render()
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", CONTENT_TYPE),
            ]
        )
        return Response(http.HTTPStatus.OK, "OK", headers, body)

    def _unavailable(self, connection: SidecarConnection, reason: str) -> Response:
        self.metrics.handshakes_refused[reason] += 1
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, reason + "\n")

    async def _readiness(self, connection: SidecarConnection) -> Response:
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
            # One keepalive loop for every connection (see wsserver.keepalive)
            # rather than a task per connection: it saves memory per connection.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            max_size=config.max_message_size,
            max_queue=4,
            server_header=None,
            # WS_WORKERS: processes share the port; the kernel spreads clients.
            reuse_port=config.workers > 1,
            # Room for a reconnection storm: the kernel caps it at somaxconn.
            backlog=4096,
            create_connection=self._connection_class(),
        )
        metrics_server = None
        if config.metrics_port:
            # Answered on the event loop, as health checks are: no threads.
            metrics_server = await serve(
                _no_websocket,
                config.metrics_host,
                config.metrics_port,
                process_request=self._metrics_endpoint,
                server_header=None,
            )
            logger.info(
                "Metrics on http://%s:%d/metrics",
                config.metrics_host,
                config.metrics_port,
            )
        else:
            logger.info("Metrics are off: set WS_METRICS_PORT to serve them")
        tasks = [
            asyncio.create_task(self._supervised("subscriber", self.subscriber.run)),
            asyncio.create_task(self._supervised("keepalive", self.keepalive.run)),
        ]
        if config.recheck_interval:
            tasks.append(
                asyncio.create_task(
                    self._supervised("periodic rechecks", self._recheck_periodically)
                )
            )
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
            self.collector.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.history.close()

    def _supervised(
        self, name: str, run: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        return supervised(name, run, self.metrics.task_restarts)

    async def _recheck_periodically(self) -> None:
        interval = self.config.recheck_interval
        assert interval is not None
        while True:
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
            await self.recheck_everyone("the periodic recheck")

    def _connection_class(self) -> type[SidecarConnection]:
        """Connections that report their opening and closing to the collector."""
        collector, router = self.collector, self.router
        release = self._release_admission

        class Connection(SidecarConnection):
            __slots__ = ()
            max_buffer = self.config.max_buffer

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                collector.opened()

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                release(self)  # one that never reached the handler
                collector.closed(len(router))

        return Connection

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


async def supervised(
    name: str,
    run: Callable[[], Awaitable[None]],
    restarts: Tally[str],
    delay: float = RESTART_DELAY,
) -> None:
    """Run a background loop until it returns: if it crashes, log it, count
    it and start it again, so that the process never runs on without it."""
    while True:
        try:
            await run()
        except Exception:
            restarts[name] += 1
            logger.exception("The %s task crashed: restarting it", name)
        else:
            return
        await asyncio.sleep(delay)


def _after(event_id: str | None, position: Position | None) -> bool:
    """Whether a live event is past what a replay covered (so not sent twice)."""
    if position is None:
        return True
    key = event_id_key(event_id)
    return key is None or key > position


def _same_credentials(
    principal: Principal, confirmed: Principal | None
) -> Principal | None:
    """The confirmed principal, unless the token's credentials died meanwhile."""
    if confirmed is None or confirmed.credentials != principal.credentials:
        return None
    return confirmed


def _reason(exc: BaseException) -> str:
    """What went wrong, never empty (a TimeoutError has no message)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc).strip() or type(exc).__name__


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseUnavailable | TimeoutError)


async def _no_websocket(connection: ServerConnection) -> None:
    """Never called: the metrics port answers every request over HTTP."""


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _select_one() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
