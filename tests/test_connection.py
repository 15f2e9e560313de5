"""SidecarConnection with real sockets: nothing it does waits for the client.

An in-process websockets server with the sidecar's connection class, and raw
clients that stop reading (small receive buffers, never read).
"""

from __future__ import annotations

import asyncio
import time

from rawclient import RawClient
from waiting import eventually
from websockets.asyncio.server import serve
from websockets.frames import Opcode

from wsserver.connection import SidecarConnection
from wsserver.keepalive import ping_frame

BIG = b"x" * 65536


class Server:
    """Serve SidecarConnections; hand each one to the test."""

    def __init__(self, max_buffer: int = 2**20) -> None:
        class Connection(SidecarConnection):
            pass

        Connection.max_buffer = max_buffer
        self.connection_class = Connection
        self.connections: asyncio.Queue[SidecarConnection] = asyncio.Queue()

    async def __aenter__(self) -> Server:
        async def handler(connection):
            await self.connections.put(connection)
            await connection.wait_closed()

        self.server = await serve(
            handler,
            "127.0.0.1",
            0,
            create_connection=self.connection_class,
            ping_interval=None,
            compression=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        for connection in list(self.server.connections):
            connection.abort()
        self.server.close(close_connections=False)
        await self.server.wait_closed()

    async def accept(self) -> tuple[RawClient, SidecarConnection]:
        client = await RawClient.connect(self.port, receive_buffer=4096)
        return client, await asyncio.wait_for(self.connections.get(), 5)


async def fill(connection: SidecarConnection) -> None:
    """Queue output until the transport stops draining (the client reads nothing)."""
    while connection.paused_at is None:
        assert connection.send_text_now(BIG)
        await asyncio.sleep(0)


async def test_close_soon_returns_at_once_and_aborts_a_client_that_stopped_reading():
    async with Server() as server:
        client, connection = await server.accept()
        await fill(connection)
        started = time.monotonic()
        connection.close_soon(1013, "client too slow", timeout=0.5)
        assert time.monotonic() - started < 0.05  # it does not wait
        async with asyncio.timeout(3):
            await connection.wait_closed()
        assert 0.4 < time.monotonic() - started < 3
        client.abort()


async def test_close_soon_is_a_normal_closing_handshake_with_a_reading_client():
    async with Server() as server:
        client, connection = await server.accept()
        connection.close_soon(1000, "bye", timeout=5)
        connection.close_soon(1000, "bye", timeout=5)  # idempotent
        async for opcode, payload in client.frames():
            if opcode == Opcode.CLOSE:
                assert payload[2:] == b"bye"
                client.send_frame(Opcode.CLOSE, payload)
                client.writer.close()
                break
        async with asyncio.timeout(2):
            await connection.wait_closed()
        assert connection.close_code == 1000
        client.abort()


async def test_pings_are_queued_without_waiting_even_when_output_is_stalled():
    async with Server() as server:
        stalled, stalled_connection = await server.accept()
        healthy, healthy_connection = await server.accept()
        await fill(stalled_connection)
        started = time.monotonic()
        now = asyncio.get_running_loop().time()
        ping = ping_frame(b"1234")
        assert stalled_connection.send_keepalive_ping(ping, b"1234", now)
        assert healthy_connection.send_keepalive_ping(ping, b"1234", now)
        assert time.monotonic() - started < 0.05
        assert healthy_connection.ping_sent_before(now)
        async for opcode, payload in healthy.frames():
            if opcode == Opcode.PING:
                assert payload == b"1234"
                healthy.pong(payload)
                break
        await eventually(
            lambda: not healthy_connection.ping_sent_before(now),
            2,
            "the pong",
            in_thread=False,
        )
        assert stalled_connection.ping_sent_before(now)  # no pong read
        assert stalled_connection.stalled_for(asyncio.get_running_loop().time()) > 0
        stalled.abort()
        healthy.abort()


async def test_a_ping_flood_from_a_client_that_never_reads_is_aborted():
    # websockets answers each ping with a pong, written whether the client
    # reads or not: past max_buffer, the connection is dropped.
    async with Server(max_buffer=64 * 1024) as server:
        client, connection = await server.accept()
        async with asyncio.timeout(10):
            # More than the kernel's socket buffers absorb: megabytes.
            while connection.is_open:
                for _ in range(1000):
                    client.send_frame(Opcode.PING, b"p" * 125)
                try:
                    await client.writer.drain()
                except ConnectionError:
                    break
            await connection.wait_closed()
        client.abort()


async def test_nothing_is_sent_once_closing():
    async with Server() as server:
        client, connection = await server.accept()
        connection.close_soon(1000, "", timeout=0.2)
        assert not connection.is_open
        assert not connection.send_text_now(b"late")
        assert not connection.send_keepalive_ping(ping_frame(b"1"), b"1", 0.0)
        client.abort()


async def test_a_client_that_starts_closing_but_keeps_tcp_open_is_aborted(
    monkeypatch,
):
    monkeypatch.setattr("wsserver.connection.CLOSE_TIMEOUT", 0.5)
    async with Server() as server:
        client, connection = await server.accept()
        client.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
        started = time.monotonic()
        async with asyncio.timeout(3):
            await connection.wait_closed()
        assert 0.4 < time.monotonic() - started < 3
        client.abort()
