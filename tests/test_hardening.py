"""Abuse, slow clients, outages and shutdown, against real processes.

The example site's database (SQLite, or a throwaway PostgreSQL cluster for
the database outage) and sidecar processes; outages kill throwaway Redis and
PostgreSQL servers of the tests' own, never the shared ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest
import redis
from clients import assert_no_event, authenticate, closed_with, receive_event
from faults import ThrowawayPostgres, ThrowawayRedis
from processes import LONG_LIVED, MainSite, SidecarProcess, http_status
from rawclient import RawClient, close_code
from waiting import eventually, units, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.e2e

# Hundreds of clients from one address at once, as no real host would.
BURSTS = {"WS_MAX_AUTHENTICATING_PER_ADDRESS": "0"}


@pytest.fixture(scope="module")
def sidecar_env():
    return LONG_LIVED  # tokens are made once per module


def publish(site: MainSite, event: dict, redis_url: str | None = None) -> None:
    client = redis.Redis.from_url(redis_url or site.env["WSSERVER_REDIS_URL"])
    client.publish(site.env["WSSERVER_CHANNEL"], json.dumps(event))


# Abuse and bad input


async def test_a_silent_connection_is_closed_after_the_auth_timeout(start_sidecar):
    sidecar = start_sidecar(WS_AUTH_TIMEOUT="1")
    websocket = await connect(sidecar.url)
    started = time.monotonic()
    assert await closed_with(websocket, timeout=5) == (1008, "authentication timeout")
    assert 0.9 < time.monotonic() - started < 1 + units(4)


async def test_a_first_frame_larger_than_a_token_is_refused_with_1009(
    start_sidecar, tokens
):
    sidecar = start_sidecar(WS_MAX_MESSAGE_SIZE="256")
    websocket = await connect(sidecar.url)
    await websocket.send("x" * 257)
    code, _ = await closed_with(websocket)
    assert code == 1009
    # A real token still fits.
    websocket = await authenticate(sidecar.url, tokens["admin"])
    await assert_no_event(websocket, 0.3)
    assert websocket.close_code is None


async def test_what_clients_send_after_authentication_is_discarded(
    site, start_sidecar, tokens
):
    sidecar = start_sidecar()
    websocket = await sidecar.connect(tokens["admin"])
    for number in range(2000):
        await websocket.send(f"chatter {number} " + "x" * 500)
    await websocket.send(b"binary too")
    # Frames are read in order: once the pong is back, the sidecar has read
    # (and discarded) all of the above.
    pong = await websocket.ping()
    async with asyncio.timeout(units(5)):
        await pong
    publish(site, {"content_type_id": 1, "after": "chatter"})
    assert (await receive_event(websocket))["after"] == "chatter"
    assert websocket.close_code is None
    await websocket.close()


async def test_origins(start_sidecar, tokens):
    sidecar = start_sidecar(WS_ALLOWED_ORIGINS="https://www.example.com")
    with pytest.raises(InvalidStatus) as refused:
        await connect(sidecar.url, origin="https://evil.example.net")
    assert refused.value.response.status_code == 403
    allowed = await connect(sidecar.url, origin="https://www.example.com")
    no_origin = await connect(sidecar.url)  # not a browser
    await allowed.close()
    await no_origin.close()
    assert "WS_ALLOWED_ORIGINS is not set" not in sidecar.log()


def test_unset_origins_are_warned_about_at_start_up(start_sidecar):
    sidecar = start_sidecar()
    assert "WARNING" in sidecar.log()
    assert "WS_ALLOWED_ORIGINS is not set" in sidecar.log()


async def test_connections_per_user_are_limited(start_sidecar, tokens):
    sidecar = start_sidecar(WS_MAX_CONNECTIONS_PER_USER="2")
    first = await authenticate(sidecar.url, tokens["alice"])
    second = await authenticate(sidecar.url, tokens["alice"])
    await assert_no_event(second, 0.3)
    third = await authenticate(sidecar.url, tokens["alice"])
    assert await closed_with(third) == (1008, "too many connections")
    other_user = await authenticate(sidecar.url, tokens["bob"])
    await assert_no_event(other_user, 0.3)
    assert other_user.close_code is None
    for websocket in (first, second, other_user):
        await websocket.close()


async def authenticate_once_a_slot_is_free(sidecar: SidecarProcess, token: str):
    """The server frees a slot when it has seen the close: retry until then."""

    async def attempt():
        try:
            return await authenticate(sidecar.url, token)
        except InvalidStatus as refused:
            assert refused.response.status_code == 503
            return None

    return await eventually(attempt, 10, "a free slot")


async def test_connections_per_process_are_limited(start_sidecar, tokens):
    # All three slots may be taken by connections still authenticating.
    sidecar = start_sidecar(WS_MAX_CONNECTIONS="3", WS_MAX_AUTHENTICATING="100%")
    open_ones = [await connect(sidecar.url) for _ in range(3)]
    with pytest.raises(InvalidStatus) as refused:
        await connect(sidecar.url)
    assert refused.value.response.status_code == 503
    # Health checks still answer, and a freed slot is usable again.
    assert http_status(sidecar.http + "/healthz") == 200
    await open_ones.pop().close()
    again = await authenticate_once_a_slot_is_free(sidecar, tokens["bob"])
    await assert_no_event(again, 0.3)
    assert again.close_code is None
    for websocket in [*open_ones, again]:
        await websocket.close()


async def test_a_reconnection_storm_is_authenticated_in_batches_correctly(
    site, start_sidecar, tokens
):
    sidecar = start_sidecar(
        WS_MAX_CONNECTIONS_PER_USER="500", WS_DB_THREADS="1", **BURSTS
    )
    carol = site.token("carol")  # inactive
    hellos = (
        [tokens["admin"]] * 100
        + [tokens["alice"]] * 100
        + [carol] * 50
        + [tokens["bob"][:-2] + "xx"] * 50
    )
    websockets = await asyncio.gather(*[authenticate(sidecar.url, t) for t in hellos])
    refused = await asyncio.gather(*[closed_with(ws) for ws in websockets[200:]])
    assert set(refused) == {(1011, "authentication failed")}
    await sidecar.until_connections(200)
    publish(site, {"content_type_id": 1, "to": "admin only"})
    for websocket in websockets[:100]:
        assert (await receive_event(websocket))["to"] == "admin only"
    for websocket in websockets[100:200]:
        assert websocket.close_code is None
        await assert_no_event(websocket, 0.01)
    with urllib.request.urlopen(sidecar.metrics_url) as response:
        metrics = response.read().decode()
    [queries] = [
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("wsserver_authentication_queries_total ")
    ]
    assert queries < 300  # batched: fewer round trips than connections
    for websocket in websockets[:200]:
        await websocket.close()


async def test_keepalive_closes_clients_that_do_not_answer_pings(start_sidecar, tokens):
    sidecar = start_sidecar(WS_PING_INTERVAL="1", WS_PING_TIMEOUT="1")
    silent = await RawClient.connect(sidecar.port)  # never answers a ping
    silent.send_text(tokens["alice"])
    healthy = await authenticate(sidecar.url, tokens["alice"])
    data = await silent.read_until_closed(timeout=15)
    assert close_code(data) == 1011
    assert "no pong in time" in sidecar.log()
    assert healthy.close_code is None  # websockets answers pings
    await healthy.close()


# Slow clients


async def test_a_client_that_stops_reading_is_closed_and_others_are_not_delayed(
    site, start_sidecar, tokens
):
    sidecar = start_sidecar(WS_MAX_BUFFER=str(256 * 1024))
    slow = await RawClient.connect(sidecar.port, receive_buffer=4096)
    slow.send_text(tokens["admin"])
    reader = await authenticate(sidecar.url, tokens["admin"])
    await sidecar.until_connections(2)

    # More than the kernel's socket buffers absorb (a few MiB on loopback),
    # in steps that a reading client keeps up with.
    body = "x" * 12_000
    for step in range(40):
        numbers = range(step * 20, step * 20 + 20)
        for number in numbers:
            publish(site, {"content_type_id": 1, "number": number, "body": body})
        received = [(await receive_event(reader))["number"] for _ in numbers]
        assert received == list(numbers)

    # The slow client is closed (1013), or aborted if it cannot take the close.
    data = await slow.read_until_closed(timeout=15)
    assert close_code(data) in (1013, None)
    assert "client too slow" in sidecar.log()
    with urllib.request.urlopen(sidecar.metrics_url) as response:
        assert b"wsserver_slow_client_closes_total 1.0" in response.read()
    assert reader.close_code is None
    await reader.close()


# Outages


async def test_a_redis_outage_drops_no_client_and_delivery_resumes(site, tmp_path):
    bus = ThrowawayRedis().start()
    sidecar = SidecarProcess.for_site(
        site,
        tmp_path,
        REDIS_URL=bus.url,
        WS_MAX_CONNECTIONS_PER_USER="200",
        **BURSTS,
        **LONG_LIVED,
    ).start()
    try:
        token = site.token("admin")
        clients = await asyncio.gather(
            *[authenticate(sidecar.url, token) for _ in range(100)]
        )
        await sidecar.until_connections(100)
        bus.kill()
        wait_for(lambda: http_status(sidecar.http + "/readyz") == 503, 10, "not ready")
        with urllib.request.urlopen(sidecar.http + "/healthz") as response:
            assert response.status == 200
        body = _body(sidecar.http + "/readyz")
        assert "not subscribed to Redis" in body

        # Time passing is the test: an outage of some length, which the
        # sidecar rides out (it keeps retrying, and drops no client).
        await asyncio.sleep(units(3))
        bus = ThrowawayRedis(port=bus.port).start()
        wait_for(lambda: http_status(sidecar.http + "/readyz") == 200, 15, "ready")
        for number in range(5):
            publish(site, {"content_type_id": 1, "number": number}, bus.url)
        for websocket in clients:
            numbers = [(await receive_event(websocket))["number"] for _ in range(5)]
            assert numbers == list(range(5))
            assert websocket.close_code is None
        assert "Redis at" in sidecar.log() and "unreachable" in sidecar.log()
        for websocket in clients:
            await websocket.close()
    finally:
        assert sidecar.stop() == 0
        bus.kill()


def _body(url: str) -> str:
    try:
        with urllib.request.urlopen(url) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


@pytest.fixture(scope="module")
def throwaway_postgres(redis_url):
    server = ThrowawayPostgres().init()
    server.execute("CREATE DATABASE site")
    yield server
    server.remove()


async def test_a_database_outage_fails_authentications_cleanly_then_recovers(
    throwaway_postgres, redis_url, tmp_path
):
    pg = throwaway_postgres
    main_site = MainSite(pg.url("site"), redis_url, f"pg-outage-{os.getpid()}")
    main_site.prepare()
    token = main_site.token("admin")
    sidecar = SidecarProcess.for_site(
        main_site, tmp_path, WS_AUTH_TIMEOUT="3", **LONG_LIVED
    ).start()
    try:
        before = await authenticate(sidecar.url, token)
        await assert_no_event(before, 0.2)

        pg.stop()
        started = time.monotonic()
        refused = await authenticate(sidecar.url, token)
        assert await closed_with(refused, timeout=5) == (1013, "try again later")
        assert time.monotonic() - started < 3.5  # not past the auth timeout
        assert before.close_code is None  # authenticated connections stay

        pg.start()

        async def authenticated():
            websocket = await authenticate(sidecar.url, token)
            try:
                await closed_with(websocket, timeout=0.5)
            except TimeoutError:
                return websocket  # authenticated: the server keeps it open
            return None

        websocket = await eventually(
            authenticated, 5, "authenticated after recovery", interval=0.2
        )
        await websocket.close()
        await before.close()
        assert "Traceback" not in sidecar.log()
    finally:
        assert sidecar.stop() == 0


# Shutdown


async def test_shutdown_closes_everyone_with_1012_even_clients_that_stopped_reading(
    site, tmp_path, tokens
):
    sidecar = SidecarProcess.for_site(
        site,
        tmp_path,
        WS_SHUTDOWN_TIMEOUT="3",
        WS_MAX_CONNECTIONS_PER_USER="2000",
        **BURSTS,
        **LONG_LIVED,
    ).start()
    token = tokens["admin"]
    stalled = []
    for _ in range(100):
        client = await RawClient.connect(sidecar.port, receive_buffer=4096)
        client.send_text(token)
        stalled.append(client)
    readers = []
    for _ in range(9):
        readers += await asyncio.gather(
            *[authenticate(sidecar.url, token) for _ in range(100)]
        )
    await sidecar.until_connections(1000)
    # Fill the stalled clients' buffers (well under WS_MAX_BUFFER).
    body = "y" * 20_000
    for number in range(20):
        publish(site, {"content_type_id": 1, "number": number, "body": body})
    for websocket in readers:
        for _ in range(20):
            await receive_event(websocket)

    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    closes = await asyncio.gather(*[closed_with(ws, timeout=10) for ws in readers])
    assert {close for close in closes} == {(1012, "server restarting")}
    assert sidecar.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 3 + units(2)
    assert "Aborting 100 connections" in sidecar.log()
    for client in stalled:
        client.abort()
    sidecar.stop()
