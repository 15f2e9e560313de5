"""HTTP: health checks and admission on the WebSocket port, metrics on their own.

Every request on the WebSocket port comes through :class:`Handshakes`
before any WebSocket handshake: health checks are answered, and a handshake
is refused with HTTP 503 when the process is full or its client has too many
unauthenticated connections (see :mod:`wsserver.limits`).

``/healthz`` says the process serves; ``/readyz`` that it can do its job:
subscribed to Redis, and the database answers (checked at most every
``READINESS_CACHE_SECONDS``, so probes cost no query each). ``/metrics`` is
served only on ``WS_METRICS_PORT``, by a second websockets server that
answers every request over HTTP, on the event loop as health checks are.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from collections.abc import Callable, Hashable, Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .counters import Counters
from .database import Database, DatabaseUnavailable
from .limits import Admission, Network, address_key, client_address
from .metrics import CONTENT_TYPE, Metrics

__all__ = [
    "READINESS_CACHE_SECONDS",
    "Handshakes",
    "HealthEndpoints",
    "MetricsEndpoint",
]

logger = logging.getLogger("wsserver.server")

READINESS_CACHE_SECONDS = 2.0


class Handshakes:
    """Answer health checks; admit WebSocket handshakes or refuse them.

    An admitted connection holds its admission until :meth:`release`: once
    its token is decided, or when its socket is gone, whichever comes first.
    """

    def __init__(
        self,
        health: HealthEndpoints,
        admission: Admission,
        counters: Counters,
        *,
        open_connections: Callable[[], int],
        max_connections: int,
        trusted_proxies: Sequence[Network],
    ) -> None:
        self.health = health
        self.admission = admission
        self.counters = counters
        self.open_connections = open_connections
        self.max_connections = max_connections
        self.trusted_proxies = trusted_proxies
        # Connections admitted and not authenticated yet: their address key.
        self._admitted: dict[Hashable, str] = {}

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """websockets' ``process_request``: a response, or None to go on
        with the WebSocket handshake."""
        response = await self.health.respond(connection, request)
        if response is not None:
            return response
        if self.open_connections() >= self.max_connections:
            return self._unavailable(connection, "too many connections")
        # Proxies that add a header line of their own rather than append.
        forwarded = ", ".join(request.headers.get_all("X-Forwarded-For")) or None
        address = address_key(
            client_address(
                connection.remote_address[0], forwarded, self.trusted_proxies
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
        self._admitted[connection] = address
        return None

    def release(self, connection: Hashable) -> None:
        """Give back a connection's admission, if it holds one (idempotent)."""
        address = self._admitted.pop(connection, None)
        if address is not None:
            self.admission.release(address)

    def _unavailable(self, connection: ServerConnection, reason: str) -> Response:
        self.counters.handshakes_refused[reason] += 1
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, reason + "\n")


class HealthEndpoints:
    """/healthz and /readyz, answered before any WebSocket handshake."""

    def __init__(self, database: Database, subscribed: Callable[[], bool]) -> None:
        self.database = database
        self.subscribed = subscribed
        self._database_ready = (float("-inf"), False)

    async def respond(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The response to a health check; None for any other request."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            return await self._readiness(connection)
        return None

    async def _readiness(self, connection: ServerConnection) -> Response:
        problems = []
        if not self.subscribed():
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


class MetricsEndpoint:
    """GET /metrics on WS_METRICS_PORT; nothing else is served there."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def serve(self, host: str, port: int) -> Server:
        """Serve it, on the event loop as health checks are: no threads."""
        server = await serve(
            self.handler, host, port, process_request=self.respond, server_header=None
        )
        logger.info("Metrics on http://%s:%d/metrics", host, port)
        return server

    def respond(self, connection: ServerConnection, request: Request) -> Response:
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

    @staticmethod
    async def handler(connection: ServerConnection) -> None:
        """Never called: every request is answered over HTTP."""


def _select_one() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
