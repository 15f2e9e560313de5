"""Clients that stop reading hold nobody: keepalive, closes, resumes, deflate.

Real sidecar processes on the example site's SQLite database; the clients
that misbehave are raw sockets with small receive buffers that never read,
so that the sidecar's writes to them fill every buffer on the way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time

import pytest
import redis
from clients import (
    assert_no_event,
    authenticate,
    publish_like_the_publisher,
    receive_event,
)
from processes import LONG_LIVED, MainSite, SidecarProcess
from rawclient import RawClient, close_code
from waiting import eventually, units
from websockets.frames import Opcode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sidecar_env():
    return LONG_LIVED  # tokens are made once per module


def publish_straight(site: MainSite, event: dict) -> None:
    """Publish straight to the channel (not to the history)."""
    with redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"]) as client:
        client.publish(site.env["WSSERVER_CHANNEL"], json.dumps(event))


async def stop_reading(sidecar: SidecarProcess, token: str, **options) -> RawClient:
    """An authenticated client that never reads what it is sent."""
    client = await RawClient.connect(sidecar.port, receive_buffer=4096, **options)
    client.send_text(token)
    return client


async def pings_and_close(client: RawClient, answer: bool, pings: list[float]):
    """Read a raw client's frames; answer pings if told to; return the close code."""
    async for opcode, payload in client.frames():
        if opcode == Opcode.PING:
            pings.append(time.monotonic())
            if answer:
                client.pong(payload)
        elif opcode == Opcode.CLOSE:
            return int.from_bytes(payload[:2], "big")
    return None


async def test_keepalive_goes_on_past_a_client_that_stopped_reading(
    site, start_sidecar, tokens
):
    # A big WS_MAX_BUFFER: the stalled client is not closed as too slow by
    # the fan-out, only by keepalive.
    sidecar = start_sidecar(
        WS_PING_INTERVAL="1", WS_PING_TIMEOUT="2", WS_MAX_BUFFER=str(64 * 2**20)
    )
    stalled = await stop_reading(sidecar, tokens["admin"])
    stalled_user = "1"  # the admin
    healthy = await RawClient.connect(sidecar.port)
    healthy.send_text(tokens["bob"])  # bob receives no events
    mute = await RawClient.connect(sidecar.port)
    mute.send_text(tokens["bob"])
    await sidecar.until_connections(3)
    body = "x" * 100_000
    for number in range(80):  # 8 MB for the stalled client: its output stalls
        publish_straight(site, {"content_type_id": 1, "number": number, "body": body})

    healthy_pings: list[float] = []
    mute_pings: list[float] = []
    healthy_task = asyncio.create_task(pings_and_close(healthy, True, healthy_pings))
    mute_close = await asyncio.wait_for(pings_and_close(mute, False, mute_pings), 15)
    # The client that never answers pings is closed, and so is the one whose
    # output stalled (aborted: a close frame would never reach it).
    assert mute_close == 1011
    assert "no pong in time" in sidecar.log()
    await eventually(
        lambda: f"closed for user {stalled_user} after" in sidecar.log(),
        15,
        "the stalled client dropped",
    )
    # And the healthy client goes on being pinged, round after round.
    await eventually(lambda: len(healthy_pings) >= 3, 15, "pings go on")
    assert not healthy_task.done()
    await sidecar.until_connections(1)
    for client in (stalled, healthy, mute):
        client.abort()


async def test_an_unauthenticated_client_that_floods_pings_and_never_reads_is_dropped(
    start_sidecar,
):
    sidecar = start_sidecar(WS_AUTH_TIMEOUT="1")
    before = sidecar.open_sockets()
    client = await RawClient.connect(sidecar.port, receive_buffer=4096)
    started = time.monotonic()
    # Pings, no token: the sidecar's pongs pile up, unread.
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(units(3)):
            while True:
                for _ in range(1000):
                    client.send_frame(Opcode.PING, b"p" * 125)
                await client.writer.drain()
    # Gone within the authentication timeout and the closing handshake's
    # bound, although it never reads the close frame.
    await eventually(lambda: sidecar.open_sockets() < before + 1, 10, "dropped")
    assert time.monotonic() - started < 1 + 5 + units(3)
    client.abort()


async def test_a_resume_that_the_client_does_not_read_has_a_deadline(
    site, start_sidecar, tokens, bus
):
    sidecar = start_sidecar(WS_REPLAY_TIMEOUT="2", WS_PING_INTERVAL="none")
    client = bus
    channel = site.env["WSSERVER_CHANNEL"]
    body = "r" * 5000
    first = publish_like_the_publisher(client, channel, {"content_type_id": 1})
    for number in range(2000):  # 10 MB to replay
        publish_like_the_publisher(
            client, channel, {"content_type_id": 1, "n": number, "body": body}
        )
    reader = await sidecar.connect(tokens["admin"])
    stalled = await stop_reading(
        sidecar, json.dumps({"token": tokens["admin"], "last_event_id": first})
    )
    await eventually(
        lambda: "resume not done within WS_REPLAY_TIMEOUT" in sidecar.log(),
        10,
        "the resume's deadline",
    )
    # Dropped (aborted: it reads no close frame either).
    await eventually(lambda: "closed for user 1 after" in sidecar.log(), 10, "dropped")
    # Others were served meanwhile, and still are.
    publish_straight(site, {"content_type_id": 1, "live": True})
    while not (await receive_event(reader)).get("live"):
        pass
    stalled.abort()
    await reader.close()


async def test_resumes_wait_for_their_turn_per_user(site, start_sidecar, tokens, bus):
    sidecar = start_sidecar(
        WS_MAX_REPLAYS_PER_USER="1", WS_REPLAY_TIMEOUT="60", WS_PING_INTERVAL="none"
    )
    client = bus
    channel = site.env["WSSERVER_CHANNEL"]
    article = int(
        site.manage(
            "shell",
            "--verbosity",
            "0",
            "-c",
            "from django.contrib.contenttypes.models import ContentType; "
            "print(ContentType.objects.get(model='article').pk)",
        )
    )
    first = publish_like_the_publisher(client, channel, {"content_type_id": article})
    body = "q" * 5000
    for number in range(1000):
        publish_like_the_publisher(
            client, channel, {"content_type_id": article, "n": number, "body": body}
        )
    marker = publish_like_the_publisher(
        client, channel, {"content_type_id": article, "marker": True}
    )

    def hello(user: str) -> str:
        return json.dumps({"token": tokens[user], "last_event_id": first})

    # An admin's resume that is never read holds the admin's only turn.
    stalled = await stop_reading(sidecar, hello("admin"))
    # Once its connection is registered, its resume has taken the turn (in
    # the same step of the sidecar's event loop).
    await sidecar.until_connections(1)
    waiting = await sidecar.connect(hello("admin"))
    await assert_no_event(waiting, 1)
    # Another user's resume is not held up.
    alice = await sidecar.connect(hello("alice"))  # may view articles
    numbers = [(await receive_event(alice)).get("n") for _ in range(1000)]
    assert numbers == list(range(1000))
    await assert_no_event(waiting, 0.1)
    publish_straight(site, {"content_type_id": article, "live": True})
    # Once the stalled resume is gone, the waiting one goes ahead, in full.
    stalled.abort()
    numbers = [(await receive_event(waiting, 10)).get("n") for _ in range(1000)]
    assert numbers == list(range(1000))
    assert (await receive_event(waiting))["id"] == marker
    assert (await receive_event(waiting)).get("live")
    await waiting.close()
    await alice.close()


async def test_a_resume_from_an_id_the_history_never_had_is_told_to_reload(
    start_sidecar, tokens, publish
):
    sidecar = start_sidecar()
    publish({"x": 0})
    future = f"{(int(time.time()) + 10**6) * 1000}-0"
    websocket = await sidecar.connect(
        json.dumps({"token": tokens["admin"], "last_event_id": future})
    )
    assert await receive_event(websocket) == {
        "type": "resume_gap",
        "last_event_id": future,
    }
    # Live events go on (they were all "before" that id).
    event_id = publish({"content_type_id": 1, "after": 1})
    assert (await receive_event(websocket))["id"] == event_id
    await websocket.close()


async def test_deflate_keeps_the_buffer_bound(site, start_sidecar, tokens):
    sidecar = start_sidecar(
        WS_COMPRESSION="deflate",
        WS_MAX_BUFFER=str(256 * 1024),
        WS_PING_INTERVAL="none",
    )
    slow = await stop_reading(
        sidecar,
        tokens["admin"],
        headers={"Sec-WebSocket-Extensions": "permessage-deflate"},
    )
    assert "permessage-deflate" in slow.response
    reader = await authenticate(sidecar.url, tokens["admin"])
    await sidecar.until_connections(2)
    for step in range(40):
        numbers = range(step * 20, step * 20 + 20)
        for number in numbers:
            # Random, so that compression cannot shrink it.
            body = base64.b64encode(os.urandom(9000)).decode()
            publish_straight(
                site, {"content_type_id": 1, "number": number, "body": body}
            )
        received = [(await receive_event(reader))["number"] for _ in numbers]
        assert received == list(numbers)
    data = await slow.read_until_closed(timeout=15)
    assert close_code(data) in (1013, None)
    assert "client too slow" in sidecar.log()
    assert reader.close_code is None
    await reader.close()
