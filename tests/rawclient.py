"""A bare WebSocket client that can misbehave: stop reading, send odd frames.

websockets' client does everything right; fault and abuse tests need a peer
that does not, so this one speaks the handshake and frames by hand.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

from websockets.frames import Frame, Opcode


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        receive_buffer: int | None = None,
        origin: str | None = None,
        source: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> RawClient:
        """Open a WebSocket connection; ``source``: the local address, e.g.
        127.0.0.2, to look like another host."""
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        if isinstance(headers, dict):
            headers = list(headers.items())
        lines.extend(f"{name}: {value}" for name, value in headers or [])
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await reader.readuntil(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(response.split(b"\r\n", 1)[0].decode())
        client = cls(reader, writer)
        client.response = response.decode()
        return client

    async def frames(self):
        """Each frame the server sends, as (opcode, payload), until it closes."""
        buffer = b""
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            buffer += data
            while True:
                parsed = _parse_one(buffer)
                if parsed is None:
                    break
                opcode, payload, size = parsed
                buffer = buffer[size:]
                yield opcode, payload

    def pong(self, payload: bytes) -> None:
        self.send_frame(Opcode.PONG, payload)

    def send_frame(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        self.writer.write(Frame(opcode, data, fin).serialize(mask=True, extensions=[]))

    def send_text(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_frame(Opcode.TEXT, data)

    async def read_until_closed(self, timeout: float) -> bytes:
        """Everything the server sends until it closes the TCP connection."""
        async with asyncio.timeout(timeout):
            return await self.reader.read(-1)

    def abort(self) -> None:
        self.writer.transport.abort()


def _parse_one(data: bytes) -> tuple[int, bytes, int] | None:
    """The first complete unmasked frame in ``data``: (opcode, payload, size)."""
    if len(data) < 2:
        return None
    opcode = data[0] & 0x0F
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        if len(data) < 4:
            return None
        length = int.from_bytes(data[2:4], "big")
        offset = 4
    elif length == 127:
        if len(data) < 10:
            return None
        length = int.from_bytes(data[2:10], "big")
        offset = 10
    if len(data) < offset + length:
        return None
    return opcode, data[offset : offset + length], offset + length


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked frame in ``data``."""
    frames = []
    offset = 0
    while offset + 2 <= len(data):
        opcode = data[offset] & 0x0F
        length = data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length = int.from_bytes(data[offset : offset + 2], "big")
            offset += 2
        elif length == 127:
            length = int.from_bytes(data[offset : offset + 8], "big")
            offset += 8
        if offset + length > len(data):
            break
        frames.append((opcode, data[offset : offset + length]))
        offset += length
    return frames


def close_code(data: bytes) -> int | None:
    """The status code of the close frame among the frames in ``data``, if any."""
    for opcode, payload in parse_frames(data):
        if opcode == Opcode.CLOSE and len(payload) >= 2:
            return int.from_bytes(payload[:2], "big")
    return None
