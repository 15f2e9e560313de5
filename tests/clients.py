"""WebSocket clients as a browser would use them: connect, send a token, read."""

from __future__ import annotations

import asyncio
import json

import redis
from waiting import units
from websockets.asyncio.client import ClientConnection, connect

from wsserver.wire import PUBLISH_WITH_HISTORY, history_key


async def authenticate(url: str, token: str | bytes) -> ClientConnection:
    websocket = await connect(url, open_timeout=units(10))
    await websocket.send(token)
    return websocket


async def receive_event(websocket: ClientConnection, timeout: float = 5) -> dict:
    """The next message, as JSON, within ``timeout`` time units."""
    async with asyncio.timeout(units(timeout)):
        return json.loads(await websocket.recv())


async def assert_no_event(websocket: ClientConnection, wait: float = 0.5) -> None:
    """Nothing arrives for ``wait`` time units: time passing is the test."""
    try:
        async with asyncio.timeout(units(wait)):
            message = await websocket.recv()
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message!r}")


async def closed_with(websocket: ClientConnection, timeout: float = 10):
    """Wait for the server to close the connection; return (code, reason)."""
    async with asyncio.timeout(units(timeout)):
        await websocket.wait_closed()
    assert websocket.close_code is not None
    return websocket.close_code, websocket.close_reason


def publish_like_the_publisher(
    client: redis.Redis,
    channel: str,
    event: dict,
    history_size: int = 10_000,
    audience: str | None = None,
) -> str:
    """Publish an event as wsserver.publisher does; return its id.

    ``audience``: its JSON (see wsserver.audience.encode_audience), for an
    event with an audience.

    The same commands too (SCRIPT EXISTS, SCRIPT LOAD if need be, EVALSHA), so
    that the publisher's Redis ACL user may run it.
    """
    args = [json.dumps(event), history_size, channel]
    if isinstance(event.get("content_type_id"), int):
        args.append(event["content_type_id"])
    if audience is not None:
        args[3:] = [args[3] if len(args) > 3 else "", audience]
    script = client.register_script(PUBLISH_WITH_HISTORY)
    with client.pipeline(transaction=False) as pipeline:
        script(keys=[history_key(channel)], args=args, client=pipeline)
        [event_id] = pipeline.execute()
    return event_id.decode()
