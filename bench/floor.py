"""The floor: what a delivery costs at the least, for the same load.

No authentication and no routing logic: the benchmark hands this server the
content type, user, groups and permissions of every token, and each event's
frame is built once and written to each recipient's transport: one write per
delivery. Whatever wsserver spends beyond this is its own overhead.

Events with an audience (``@<audience JSON>\\n<event JSON>``, see
wsserver.audience) are routed with one dictionary per kind of audience: the
audience is parsed, the event part is framed as it is, and written to the
connections of its users, groups or permissions (each connection once when
the audience names more than one of them).
"""

import asyncio
import http
import json
import sys

from redis import asyncio as aioredis
from websockets.asyncio.server import serve
from websockets.frames import Frame, Opcode

BY_CONTENT_TYPE: dict[int, set] = {}
# Indexes for events with an audience: by audience key, then by value.
BY_AUDIENCE: dict[str, dict] = {"users": {}, "groups": {}, "permissions": {}}
PLAN: dict[str, dict] = {}
COUNT = 0


def indexes(token: str) -> list[set]:
    """The sets a connection with this token belongs to."""
    entry = PLAN.get(token, {})
    sets = [BY_CONTENT_TYPE.setdefault(entry.get("content_type_id"), set())]
    by_user = BY_AUDIENCE["users"]
    if "user" in entry:
        sets.append(by_user.setdefault(entry["user"], set()))
    for key in ("groups", "permissions"):
        for value in entry.get(key, ()):
            sets.append(BY_AUDIENCE[key].setdefault(value, set()))
    return sets


async def handler(websocket):
    global COUNT
    token = await websocket.recv()
    sets = indexes(token)
    for recipients in sets:
        recipients.add(websocket)
    COUNT += 1
    try:
        await websocket.wait_closed()
    finally:
        for recipients in sets:
            recipients.discard(websocket)
        COUNT -= 1


def audience_recipients(audience: dict):
    sources = [
        BY_AUDIENCE[key].get(value, ())
        for key, values in audience.items()
        if key in BY_AUDIENCE
        for value in values
    ]
    if "content_types" in audience:
        sources += [BY_CONTENT_TYPE.get(ct, ()) for ct in audience["content_types"]]
    if len(sources) == 1:
        return sources[0]
    return set().union(*sources)


async def process_events(redis_url, channel):
    redis = aioredis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        payload = message["data"]
        if payload[:1] == b"@":
            header, _, payload = payload.partition(b"\n")
            recipients = audience_recipients(json.loads(header[1:]))
        else:
            recipients = BY_CONTENT_TYPE.get(json.loads(payload)["content_type_id"], ())
        frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        for websocket in recipients:
            websocket.transport.write(frame)


def count(connection, request):
    if request.path == "/count":
        return connection.respond(http.HTTPStatus.OK, f"{COUNT}\n")
    return None


async def main(port, redis_url, channel, plan_path):
    with open(plan_path) as plan:
        for entry in json.load(plan):
            PLAN[entry["token"]] = entry
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
