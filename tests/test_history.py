"""What a resume is sent, read from a real Redis Stream (wsserver.history)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from wsserver.audience import Audience
from wsserver.history import CHUNK, History
from wsserver.wire import PUBLISH_WITH_HISTORY

ct = Audience.of_content_type

pytestmark = pytest.mark.e2e


@pytest.fixture
def stream(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"history-test-{uuid.uuid4().hex[:12]}"
    yield client, key
    client.delete(key)


def append(client, key, event: dict, content_type: int | None = None) -> str:
    """Append as the publisher does: with the content type beside, or not."""
    args = [json.dumps(event), 100_000, key + ":channel"]
    if content_type is not None:
        args.append(content_type)
    return client.eval(PUBLISH_WITH_HISTORY, 1, key, *args).decode()


async def replayed(history: History, last_event_id: str):
    replay = await history.plan(last_event_id)
    entries = [e async for chunk in history.entries(replay) for e in chunk]
    return replay, entries


async def test_the_entries_after_the_id_in_chunks(stream, redis_url):
    client, key = stream
    ids = [append(client, key, {"content_type_id": 3, "n": n}, 3) for n in range(450)]
    history = History(redis_url, key, limit=1000)
    replay, entries = await replayed(history, ids[9])
    assert not replay.gap and replay.until == ids[-1]
    assert [e.id for e in entries] == ids[10:]
    assert json.loads(entries[0].payload) == {
        "id": ids[10],
        "content_type_id": 3,
        "n": 10,
    }
    chunks = [chunk async for chunk in history.entries(replay)]
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 440 - 2 * CHUNK]
    await history.close()


async def test_the_stored_content_type_is_used_without_parsing(stream, redis_url):
    client, key = stream
    first = append(client, key, {"content_type_id": 1})
    append(client, key, {"content_type_id": 1}, 5)  # what the entry says wins
    append(client, key, {"content_type_id": 2})  # no ct field: parsed
    # Never sent, ct or not: the live copy would have been refused too.
    client.xadd(key, {"event": b"not json"})
    client.xadd(key, {"event": b"{}", "ct": b"1"})  # {"id":"...",} is not JSON
    client.xadd(key, {"event": '{"x": "é"}'.encode("latin-1"), "ct": b"1"})
    history = History(redis_url, key, limit=100)
    _, entries = await replayed(history, first)
    assert [e.audience for e in entries] == [ct(5), ct(2), None, None, None]
    assert history.invalid_entries == 3
    await history.close()


async def test_gaps(stream, redis_url):
    client, key = stream
    history = History(redis_url, key, limit=100)
    # No history at all.
    assert (await history.plan("1-0")).gap
    ids = [append(client, key, {"content_type_id": 1, "n": n}, 1) for n in range(10)]
    # Trimmed past the client's last event.
    client.xtrim(key, minid=ids[5], approximate=False)
    assert (await history.plan(ids[2])).gap
    assert not (await history.plan(ids[5])).gap
    # An id the stream never reached (another Redis, or one that lost its data).
    future = f"{(int(time.time()) + 10**6) * 1000}-0"
    replay = await history.plan(future)
    assert replay.gap and replay.position is None
    # Up to date: nothing to send, no gap.
    replay, entries = await replayed(history, ids[-1])
    assert not replay.gap and entries == []
    await history.close()


@pytest.mark.parametrize("extra", [3, 250])  # read from either end of the stream
async def test_more_than_the_limit_after_the_id_is_a_gap(stream, redis_url, extra):
    client, key = stream
    limit = 200
    ids = [append(client, key, {"content_type_id": 1}, 1) for _ in range(limit + extra)]
    history = History(redis_url, key, limit=limit)
    # Exactly `limit` after it: replayed; one more: a gap.
    assert not (await history.plan(ids[extra - 1])).gap
    assert (await history.plan(ids[extra - 2])).gap
    await history.close()


async def test_addressed_entries_keep_their_audience(stream, redis_url):
    client, key = stream
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key + ":channel")
    pubsub.get_message(timeout=5)  # the subscription is confirmed
    first = append(client, key, {"content_type_id": 1}, 1)
    audience = '{"users":["7"]}'
    event = '{"event":"export.ready","data":null}'
    args = [event, 100, key + ":channel", "", audience]
    second = client.eval(PUBLISH_WITH_HISTORY, 1, key, *args).decode()
    client.xadd(key, {"aevent": b'{"event":"x"}', "aud": b'{"everyone":true}'})
    # An addressed event kept as "event" is never sent (see wire.py).
    client.xadd(key, {"event": b'{"event":"x"}', "aud": b'{"users":["7"]}'})
    messages = []
    deadline = time.monotonic() + 5
    while len(messages) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is not None:
            messages.append(message)
    pubsub.close()
    assert messages[1]["data"] == (
        b'@{"users":["7"]}\n{"id":"%s","event":"export.ready","data":null}'
        % second.encode()
    )
    history = History(redis_url, key, limit=100)
    _, entries = await replayed(history, first)
    assert [e.audience for e in entries] == [
        Audience(users=frozenset({"7"})),
        None,  # an audience that does not parse is never widened: skipped
        None,
    ]
    assert entries[0].payload == messages[1]["data"].partition(b"\n")[2]
    assert history.invalid_entries == 2
    fields = client.xrange(key, second, second)[0][1]
    assert fields == {b"aevent": event.encode(), b"aud": audience.encode()}
    await history.close()
