"""History and resume: a client that reconnects gets what it missed, once.

The example site on PostgreSQL, two sidecar processes, real Redis; events made
in the admin and, for volume, published with the publisher's own script.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from clients import (
    assert_no_event,
    closed_with,
    publish_like_the_publisher,
    receive_event,
)
from processes import SidecarProcess, started_sidecars
from waiting import units
from websockets.asyncio.client import connect

from wsserver.wire import history_key

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(postgres_site, redis_url):
    yield postgres_site
    redis.Redis.from_url(redis_url).delete(
        history_key(postgres_site.env["WSSERVER_CHANNEL"])
    )


@pytest.fixture(scope="module")
def sidecars(site, tmp_path_factory):
    yield from started_sidecars(site, tmp_path_factory)


async def resume(sidecar: SidecarProcess, token: str, last_event_id: str | None):
    hello = {"token": token}
    if last_event_id is not None:
        hello["last_event_id"] = last_event_id
    return await sidecar.connect(json.dumps(hello))


async def test_resume_on_another_process_delivers_exactly_the_missed_permitted_events(
    site, sidecars, admin
):
    first, second = sidecars
    alice = await resume(first, site.token("alice"), None)  # view_article only
    admin.add("article", title="Seen live", body="x")
    seen = await receive_event(alice)
    assert seen["object"] == "Seen live"
    await alice.close()

    admin.add("article", title="Missed 1", body="x")
    admin.add("product", name="Not for alice", price="1")
    admin.add("article", title="Missed 2", body="x")

    # Alice comes back on the other process.
    alice = await resume(second, site.token("alice"), seen["id"])
    replayed = [await receive_event(alice) for _ in range(2)]
    assert [event["object"] for event in replayed] == ["Missed 1", "Missed 2"]
    assert all(event["action"] == "addition" for event in replayed)
    await assert_no_event(alice)

    admin.add("article", title="Live again", body="x")
    assert (await receive_event(alice))["object"] == "Live again"
    await assert_no_event(alice)
    await alice.close()


async def test_no_gap_and_no_duplicate_while_events_keep_arriving(site, sidecars, bus):
    channel = site.env["WSSERVER_CHANNEL"]
    content_type_id = 1_000_001  # admin, a superuser, sees every content type

    def event(number: int) -> dict:
        return {"content_type_id": content_type_id, "number": number}

    start_id = publish_like_the_publisher(bus, channel, event(0))
    for number in range(1, 301):
        publish_like_the_publisher(bus, channel, event(number))

    publishing = asyncio.Event()

    async def keep_publishing():
        for number in range(301, 601):
            await asyncio.to_thread(
                publish_like_the_publisher, bus, channel, event(number)
            )
            publishing.set()

    publisher = asyncio.create_task(keep_publishing())
    # Resume while events keep arriving: once the first live one is out.
    async with asyncio.timeout(units(10)):
        await publishing.wait()
    websocket = await resume(sidecars[1], site.token("admin"), start_id)
    received = []
    async with asyncio.timeout(units(20)):
        while len(received) < 600:
            received.append(json.loads(await websocket.recv()))
    await publisher
    numbers = [event["number"] for event in received]
    assert numbers == list(range(1, 601)), [
        (i, n, received[i]["id"], received[n - 1]["id"])
        for i, n in enumerate(numbers)
        if n != i + 1
    ][:3]
    await assert_no_event(websocket)
    ids = [tuple(map(int, event["id"].split("-"))) for event in received]
    assert ids == sorted(set(ids))
    await websocket.close()


async def test_a_too_old_id_is_reported_before_live_events(
    site, sidecars, bus, redis_url
):
    channel = site.env["WSSERVER_CHANNEL"]
    ids = [
        publish_like_the_publisher(bus, channel, {"content_type_id": 7, "n": n})
        for n in range(5)
    ]
    # The history drops everything up to and including ids[2].
    # As Redis' own trimming would (the site's Redis user may only append).
    redis.Redis.from_url(redis_url).xtrim(
        history_key(channel), minid=ids[3], approximate=False
    )

    websocket = await resume(sidecars[0], site.token("admin"), ids[0])
    assert await receive_event(websocket) == {
        "type": "resume_gap",
        "last_event_id": ids[0],
    }
    await assert_no_event(websocket)  # nothing is replayed after a gap
    publish_like_the_publisher(bus, channel, {"content_type_id": 7, "n": "live"})
    assert (await receive_event(websocket))["n"] == "live"
    await websocket.close()

    # From an id the history still follows, there is no gap.
    websocket = await resume(sidecars[0], site.token("admin"), ids[3])
    assert (await receive_event(websocket))["n"] == 4
    await websocket.close()


async def test_a_bare_token_works_as_in_the_guide(site, sidecars, admin):
    websocket = await connect(sidecars[0].url)
    await websocket.send(site.token("alice"))
    admin.add("article", title="Guide client", body="x")
    event = await receive_event(websocket)
    assert event["object"] == "Guide client"
    await websocket.close()


async def test_events_published_straight_to_the_channel_are_delivered_live(
    site, sidecars, bus
):
    websocket = await resume(sidecars[0], site.token("admin"), None)
    bus.publish(site.env["WSSERVER_CHANNEL"], json.dumps({"content_type_id": 3}))
    assert await receive_event(websocket) == {"content_type_id": 3}
    await websocket.close()


@pytest.mark.parametrize(
    "hello",
    [
        '{"token": 1}',
        '{"token": "x", "last_event_id": "yesterday"}',
        "{not json",
        "[]",
    ],
)
async def test_malformed_resume_requests_are_refused(sidecars, hello):
    websocket = await connect(sidecars[0].url)
    await websocket.send(hello)
    assert await closed_with(websocket) == (1011, "authentication failed")
