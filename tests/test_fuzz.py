"""A bounded, seeded fuzz of first frames and bus payloads against a real sidecar.

Afterwards the server must still serve, must not have logged a traceback,
and must hold no more open files (connections) than before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random

import pytest
import redis
from clients import authenticate, closed_with, receive_event
from processes import SidecarProcess, http_status
from rawclient import RawClient
from waiting import eventually
from websockets.frames import Opcode

from wsserver.events import InvalidEvent, parse_event

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("WSSERVER_FUZZ_SEED", "20261125"))
CASES = 300


@pytest.fixture(scope="module")
def sidecar(site, tmp_path_factory):
    process = SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("sidecar"),
        SESAME_MAX_AGE="86400",
        WS_AUTH_TIMEOUT="2",
        WS_MAX_CONNECTIONS_PER_USER="1000",
    ).start()
    yield process
    assert process.stop() == 0


def near_valid(token: str, rng: random.Random) -> str:
    chars = list(token)
    kind = rng.randrange(4)
    if kind == 0:  # flip a character
        position = rng.randrange(len(chars))
        chars[position] = rng.choice("ABCxyz019-_")
    elif kind == 1:  # truncate
        chars = chars[: rng.randrange(len(chars))]
    elif kind == 2:  # extend
        chars += rng.choices("ABCxyz019-_=", k=rng.randrange(1, 8))
    else:  # wrap it in a resume request with a bad id
        return json.dumps({"token": token, "last_event_id": rng.choice(["", "x-1"])})
    return "".join(chars)


def first_frames(token: str, rng: random.Random):
    """(opcode, data, fin) sequences a misbehaving client might send first."""
    for _ in range(CASES):
        kind = rng.randrange(9)
        if kind == 0:
            text = "".join(
                chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(64))
            )
            yield [(Opcode.TEXT, text.encode(), True)]
        elif kind == 1:
            yield [(Opcode.BINARY, rng.randbytes(rng.randrange(64)), True)]
        elif kind == 2:  # invalid UTF-8 in a text frame
            yield [(Opcode.TEXT, b"\xff\xfe" + rng.randbytes(8), True)]
        elif kind == 3:  # huge
            yield [(Opcode.TEXT, b"a" * rng.choice([1025, 70_000]), True)]
        elif kind == 4:  # fragmented token
            data = token.encode()
            cut = rng.randrange(1, len(data))
            yield [(Opcode.TEXT, data[:cut], False), (Opcode.CONT, data[cut:], True)]
        elif kind == 5:  # endless fragments
            yield [(Opcode.TEXT, b"x" * 100, False)] + [
                (Opcode.CONT, b"y" * 100, False)
            ] * 20
        else:
            yield [(Opcode.TEXT, near_valid(token, rng).encode(), True)]


# Ids that once stopped the subscriber: an OverflowError (400 digits) in the
# delay metric, a ValueError (over 4,300 digits) in the id's conversion.
BAD_IDS = ["9" * 400 + "-1", "1-" + "9" * 5000, f"{2**64}-0", "١٢-3", "1-0-0"]
# A stream id, but one Redis' clock will not reach for centuries: it would
# make every resume's position look passed.
FUTURE_ID = "99999999999999-0"


def bus_payloads(rng: random.Random):
    values = [None, True, 1.5, "7", [], {}, -1, 2**70, 0]
    for _ in range(CASES):
        kind = rng.randrange(9)
        if kind == 0:
            yield rng.randbytes(rng.randrange(100))
        elif kind == 1:
            yield json.dumps(rng.choice(values)).encode()
        elif kind == 2:
            yield json.dumps({"content_type_id": rng.choice(values)}).encode()
        elif kind == 3:
            yield json.dumps(
                {"content_type_id": 1, "id": rng.choice([*values, "1-", *BAD_IDS])}
            ).encode()
        elif kind == 4:
            yield json.dumps({"content_type_id": 10**6 + rng.randrange(100)}).encode()
        elif kind == 5:
            size = rng.choice([60_000, 200_000])  # past WS_MAX_EVENT_SIZE: skipped
            yield b'{"content_type_id": 1, "x": "' + b"z" * size + b'"}'
        elif kind == 6:
            yield b'{"content_type_id": 1' + rng.randbytes(5)
        elif kind == 7:  # an audience, well-formed or not
            key = rng.choice(["users", "groups", "permissions", "content_types", "x"])
            part = rng.choice([*values, "1", "a.b", [rng.choice([*values, "a.b"])]])
            audience = json.dumps({key: part, "permissions": ["a.b"]}).encode()
            yield b"@" + audience + b'\n{"event": "fuzz"}'
        else:  # a good audience, and a bad event or none
            yield b'@{"content_types":[1]}' + rng.choice([b"", b"\n", b"\n[]"])


async def test_fuzzed_first_frames(site, sidecar):
    rng = random.Random(SEED)
    token = site.token("admin")
    before = sidecar.open_sockets()

    async def one(frames):
        try:
            client = await RawClient.connect(sidecar.port)
        except ConnectionError:
            return
        for opcode, data, fin in frames:
            client.send_frame(opcode, data, fin)
        # Authenticated ones, e.g. a fragmented valid token, stay open.
        with contextlib.suppress(TimeoutError):
            await client.read_until_closed(timeout=2.5)
        client.abort()

    cases = list(first_frames(token, rng))
    for start in range(0, len(cases), 100):
        await asyncio.gather(*[one(frames) for frames in cases[start : start + 100]])

    await assert_still_serving(site, sidecar, token)
    await eventually(
        lambda: sidecar.open_sockets() <= before, 10, "the fuzzed sockets closed"
    )
    assert "Traceback" not in sidecar.log()
    assert "handler failed" not in sidecar.log()


async def test_fuzzed_bus_payloads(site, sidecar, redis_url):
    rng = random.Random(SEED + 1)
    token = site.token("admin")
    watcher = await sidecar.connect(token)
    bus = redis.Redis.from_url(redis_url)
    channel = site.env["WSSERVER_CHANNEL"]

    def publish_all() -> int:
        expected = 0
        for payload in bus_payloads(rng):
            bus.publish(channel, payload)
            bus.publish(f"{channel}:control", payload)
            if payload.startswith(b"@"):
                # The sidecar's own parser tells: only audiences matter here.
                try:
                    valid = parse_event(payload).id is None
                except InvalidEvent:
                    valid = False
                expected += valid
                continue
            try:
                data = json.loads(payload)
                valid = type(data.get("content_type_id")) is int and (
                    "id" not in data
                    or (isinstance(data["id"], str) and data["id"] == "1-0")
                )
            except (ValueError, AttributeError, UnicodeDecodeError):
                valid = False
            # Larger events are skipped (WS_MAX_EVENT_SIZE).
            expected += valid and len(payload) <= 65536
        return expected

    # Read as a browser does, while the events arrive (megabytes of them:
    # a client that read nothing meanwhile would be closed as too slow).
    received = []

    async def read() -> None:
        while True:
            received.append(await receive_event(watcher, 30))

    reader = asyncio.create_task(read())
    expected = await asyncio.to_thread(publish_all)
    # The superuser receives the valid events, at least.
    await eventually(lambda: len(received) >= expected, 30, "the valid events")
    reader.cancel()
    assert watcher.close_code is None
    await assert_still_serving(site, sidecar, token)
    assert "Traceback" not in sidecar.log()
    await watcher.close()


async def test_one_bad_message_of_each_kind_stops_nothing(site, sidecar, redis_url):
    token = site.token("admin")
    watcher = await sidecar.connect(token)
    before = sidecar.invalid_bus_messages()
    bus = redis.Redis.from_url(redis_url)
    channel = site.env["WSSERVER_CHANNEL"]
    bad = [
        *[
            json.dumps({"content_type_id": 1, "id": bad_id})
            for bad_id in [*BAD_IDS, FUTURE_ID]
        ],
        "[" * 100_000,  # RecursionError in the JSON parser
        '{"content_type_id": ' + "1" * 5000 + "}",
        # Past WS_MAX_BUFFER: it would close every recipient as too slow.
        json.dumps({"content_type_id": 1, "body": "x" * 2**21}),
    ]
    for payload in bad:
        bus.publish(channel, payload)
    controls = [
        json.dumps({"type": "group", "group_id": 10**400}),
        json.dumps({"type": "users", "user_ids": ["9" * 5000]}),
        "[" * 100_000,
    ]
    for payload in controls:
        bus.publish(f"{channel}:control", payload)
    bus.publish(channel, json.dumps({"content_type_id": 1, "after": "bad"}))
    assert (await receive_event(watcher))["after"] == "bad"
    await eventually(
        lambda: sidecar.invalid_bus_messages() - before == len(bad) + 1,
        5,
        "the bad messages counted",
    )
    assert http_status(sidecar.http + "/readyz") == 200
    await watcher.close()


async def test_a_first_message_with_a_huge_id_is_refused_cleanly(site, start_sidecar):
    # Allowed by a generous WS_MAX_MESSAGE_SIZE: an id past int()'s digits.
    sidecar = start_sidecar(WS_MAX_MESSAGE_SIZE="65536")
    hello = json.dumps(
        {"token": site.token("admin"), "last_event_id": "1-" + "9" * 5000}
    )
    websocket = await authenticate(sidecar.url, hello)
    assert await closed_with(websocket) == (1011, "authentication failed")
    assert "Traceback" not in sidecar.log()


async def assert_still_serving(site, sidecar, token):
    websocket = await sidecar.connect(token)
    redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"]).publish(
        site.env["WSSERVER_CHANNEL"], json.dumps({"content_type_id": 1, "ok": True})
    )
    while not (await receive_event(websocket)).get("ok"):
        pass
    await websocket.close()
