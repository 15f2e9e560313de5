"""The guide's approach, as the benchmark's baseline.

Straight from the websockets Django guide: default websockets settings
(permessage-deflate on), one thread hop per authentication (django-sesame's
get_user, then the guide's get_content_types, which asks has_perm for every
content type), and every event checked against every connection before
broadcast(). Only ``GET /count`` is added, so the benchmark can tell when
every client is authenticated.

Run with the sidecar's own Django project: DJANGO_SETTINGS_MODULE=settings_auth.
"""

import asyncio
import http
import json
import os
import sys

import django

django.setup()

from django.contrib.contenttypes.models import ContentType  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from sesame.utils import get_user  # noqa: E402
from websockets.asyncio.server import broadcast, serve  # noqa: E402
from websockets.frames import CloseCode  # noqa: E402

CONNECTIONS = {}


def get_content_types(user):
    """Return the set of IDs of content types visible by user."""
    # This does only three database queries because Django caches
    # all permissions on the first call to user.has_perm(...).
    return {
        ct.id
        for ct in ContentType.objects.all()
        if user.has_perm(f"{ct.app_label}.view_{ct.model}")
        or user.has_perm(f"{ct.app_label}.change_{ct.model}")
    }


def authenticate(token):
    user = get_user(token)
    if user is None:
        return None, None
    return user, get_content_types(user)


async def handler(websocket):
    """Authenticate user and register connection in CONNECTIONS."""
    sesame = await websocket.recv()
    user, ct_ids = await asyncio.to_thread(authenticate, sesame)
    if user is None:
        await websocket.close(CloseCode.INTERNAL_ERROR, "authentication failed")
        return

    CONNECTIONS[websocket] = {"content_type_ids": ct_ids}
    try:
        await websocket.wait_closed()
    finally:
        del CONNECTIONS[websocket]


async def process_events(redis_url, channel):
    """Listen to events in Redis and process them."""
    redis = aioredis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        payload = message["data"].decode()
        # Broadcast event to all users who have permissions to see it.
        event = json.loads(payload)
        recipients = (
            websocket
            for websocket, connection in CONNECTIONS.items()
            if event["content_type_id"] in connection["content_type_ids"]
        )
        broadcast(recipients, payload)


def count(connection, request):
    if request.path == "/count":
        return connection.respond(http.HTTPStatus.OK, f"{len(CONNECTIONS)}\n")
    return None


async def main(port, redis_url, channel):
    async with serve(handler, "127.0.0.1", port, process_request=count, backlog=4096):
        await process_events(redis_url, channel)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), os.environ["REDIS_URL"], sys.argv[2]))
