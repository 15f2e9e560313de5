"""The floor: what a delivery costs at the least, for the same load.

No authentication and no routing logic: the benchmark hands this server the
content type of every token, and each event's frame is built once and
written to each recipient's transport: one write per delivery. Whatever
wsserver spends beyond this is its own overhead.
"""

import asyncio
import http
import json
import sys

from redis import asyncio as aioredis
from websockets.asyncio.server import serve
from websockets.frames import Frame, Opcode

BY_CONTENT_TYPE: dict[int, set] = {}
CONTENT_TYPES: dict[str, int | None] = {}
COUNT = 0


async def handler(websocket):
    global COUNT
    token = await websocket.recv()
    recipients = BY_CONTENT_TYPE.setdefault(CONTENT_TYPES.get(token), set())
    recipients.add(websocket)
    COUNT += 1
    try:
        await websocket.wait_closed()
    finally:
        recipients.discard(websocket)
        COUNT -= 1


async def process_events(redis_url, channel):
    redis = aioredis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        payload = message["data"]
        frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        content_type_id = json.loads(payload)["content_type_id"]
        for websocket in BY_CONTENT_TYPE.get(content_type_id, ()):
            websocket.transport.write(frame)


def count(connection, request):
    if request.path == "/count":
        return connection.respond(http.HTTPStatus.OK, f"{COUNT}\n")
    return None


async def main(port, redis_url, channel, plan_path):
    with open(plan_path) as plan:
        for entry in json.load(plan):
            CONTENT_TYPES[entry["token"]] = entry["content_type_id"]
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=count,
        compression=None,
        backlog=4096,
    ):
        await process_events(redis_url, channel)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
