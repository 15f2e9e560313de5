"""A light load generator: many WebSocket clients in one process, no library.

Each client is a bare asyncio Protocol: it sends the handshake and its token,
answers pings, and counts the text frames it receives by reading frame
headers only. One client in ``SAMPLE`` also reads the publication time in each
event to measure latency. That keeps the client side cheap enough that the
server, not the load, is what is measured (the benchmark reports this
process's CPU use too).

Sampled clients read their socket with ``recvmsg()`` and the kernel's receive
timestamp (SO_TIMESTAMPNS): latency is measured both to the moment the data
reached the client's socket and to the moment this process read it, which is
later when it has thousands of other sockets to read.

Clients of servers without authentication (the Nchan reference) open a path
of their own (a channel) and send no token. Every ping received is counted:
the benchmark reports how often each server pings its idle clients.

Driven by the benchmark over stdin/stdout, one JSON object per line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import struct
import sys
import time
import zlib

from websockets.frames import Frame, Opcode

SAMPLE = 10
# Linux (asm-generic/socket.h); the control message has the same type.
SO_TIMESTAMPNS = 35


class Load:
    def __init__(
        self, tokens: list[str], paths: list[str] | None, send_token: bool
    ) -> None:
        self.tokens = tokens
        self.paths = paths or ["/"] * len(tokens)
        self.send_token = send_token
        self.clients: list[Client] = []
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.latencies: list[float] = []
        self.arrival_latencies: list[float] = []
        self.arrivals: list[tuple[int, float]] = []  # (event number, latency)
        self.handshakes = 0
        self.failures = 0
        self.lost = 0
        self.pings = 0
        # When text frames were last read (time.time()), by any client.
        self.last = None

    async def connect(self, port: int, concurrency: int) -> dict:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(concurrency)

        async def one(index: int, token: str) -> None:
            path = self.paths[index]
            async with semaphore:
                for _ in range(20):
                    try:
                        if index % SAMPLE == 0:
                            client = await SampledClient.connect(
                                self, token, port, path
                            )
                        else:
                            _, client = await loop.create_connection(
                                lambda: Client(self, token, False, path),
                                "127.0.0.1",
                                port,
                            )
                    except OSError:
                        await asyncio.sleep(0.1)
                        continue
                    self.clients.append(client)
                    await client.ready
                    return
                self.failures += 1

        await asyncio.gather(*[one(i, t) for i, t in enumerate(self.tokens)])
        return {"seconds": time.perf_counter() - started, "failures": self.failures}

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.abort()
        self.clients = []

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "frames": self.frames,
            "latencies": self.latencies,
            "arrival_latencies": self.arrival_latencies,
            "arrivals": self.arrivals,
            "lost": self.lost,
            "pings": self.pings,
            "cpu": usage.ru_utime + usage.ru_stime,
            "last": self.last,
        }


class Client(asyncio.Protocol):
    def __init__(self, load: Load, token: str, sample: bool, path: str = "/") -> None:
        self.load = load
        self.token = token
        self.path = path
        self.sample = sample
        self.inflater = zlib.decompressobj(wbits=-15) if sample else None
        self.buffer = bytearray()
        self.open = False
        self.transport = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                # As browsers do: servers with compression on will use it.
                "Sec-WebSocket-Extensions: permessage-deflate; "
                "client_max_window_bits\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        self.feed(data, None)

    def feed(self, data: bytes, arrived: float | None) -> None:
        """Handle received bytes; ``arrived``: when the kernel received them."""
        buffer = self.buffer
        buffer += data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.transport.abort()
                return
            del buffer[: end + 4]
            self.open = True
            if self.load.send_token:
                self.transport.write(self._frame(Opcode.TEXT, self.token.encode()))
            self.load.handshakes += 1
            self.ready.set_result(None)
        offset = 0
        size = len(buffer)
        frames = self.load.frames
        while size - offset >= 2:
            compressed = buffer[offset] & 0x40
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            if opcode == 1:
                self.load.frames += 1
                if self.sample:
                    self._measure(buffer, start, end, compressed, arrived)
            elif opcode == 9:  # ping
                self.load.pings += 1
                self.transport.write(self._frame(Opcode.PONG, bytes(buffer[start:end])))
            offset = end
        if offset:
            del buffer[:offset]
        if self.load.frames != frames:
            self.load.last = time.time()

    def _measure(
        self, buffer: bytearray, start: int, end: int, compressed, arrived
    ) -> None:
        payload = bytes(buffer[start:end])
        if compressed:  # permessage-deflate, with context takeover
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        position = payload.find(b'"t": ')
        if position >= 0:
            stop = payload.find(b",", position)
            published = float(payload[position + 5 : stop])
            self.load.latencies.append(time.time() - published)
            if arrived is not None:
                self.load.arrival_latencies.append(arrived - published)
                number = payload.find(b'"object_id": "')
                if number >= 0:
                    start = number + 14
                    event = int(payload[start : payload.find(b'"', start)])
                    self.load.arrivals.append((event, arrived - published))

    @staticmethod
    def _frame(opcode: Opcode, data: bytes) -> bytes:
        return Frame(opcode, data).serialize(mask=True, extensions=[])

    def connection_lost(self, exc) -> None:
        self.load.lost += 1
        self.transport = None
        if not self.ready.done():
            self.ready.set_result(None)


class SampledClient(Client):
    """A client that reads with recvmsg() for the kernel's receive timestamps.

    For TCP the timestamp is that of the last segment read, so when one read
    returns several frames the earlier ones are counted late, never early.
    """

    @classmethod
    async def connect(
        cls, load: Load, token: str, port: int, path: str
    ) -> SampledClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        client = cls(load, token, True, path)
        client.connection_made(_SocketWriter(sock, client))
        loop.add_reader(sock.fileno(), client._readable, sock)
        return client

    def _readable(self, sock: socket.socket) -> None:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(
                65536, socket.CMSG_SPACE(16)
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if self.transport is not None:
                self.transport.abort()
            return
        arrived = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                arrived = seconds + nanoseconds / 1e9
        self.feed(data, arrived)


class _SocketWriter:
    """What a SampledClient needs of a transport: small writes, abort()."""

    def __init__(self, sock: socket.socket, client: SampledClient) -> None:
        self.sock = sock
        self.client = client

    def write(self, data: bytes) -> None:
        # Handshakes, tokens and pongs: a few hundred bytes into an empty
        # socket buffer.
        if self.sock.send(data) != len(data):
            raise RuntimeError("short write")

    def abort(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.client.connection_lost(None)


async def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setup = json.loads(sys.stdin.readline())
    if isinstance(setup, list):  # tokens only
        setup = {"tokens": setup}
    load = Load(setup["tokens"], setup.get("paths"), setup.get("send_token", True))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )

    def reply(data: dict) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    reply({"ready": True})
    while line := await reader.readline():
        command = json.loads(line)
        name = command["cmd"]
        if name == "connect":
            reply(await load.connect(command["port"], command["concurrency"]))
        elif name == "reset":
            load.reset()
            reply({})
        elif name == "stats":
            reply(load.stats())
        elif name == "close":
            load.close()
            reply({})
        elif name == "exit":
            return


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
