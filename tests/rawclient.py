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
        cls, port: int, *, receive_buffer: int | None = None, origin: str | None = None
    ) -> RawClient:
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
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
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await reader.readuntil(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(response.split(b"\r\n", 1)[0].decode())
        return cls(reader, writer)

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
