"""Garbage collection for long-lived connections: the schedule, gc, a sidecar."""

from __future__ import annotations

import asyncio
import gc
import urllib.request
import weakref

import pytest
import redis
from clients import authenticate, receive_event
from processes import MainSite, SidecarProcess
from prometheus_client.parser import text_string_to_metric_families
from waiting import eventually, wait_for

from wsserver.gcschedule import CollectionSchedule, GcScheduler

# The schedule: pure counters


def test_survivors_are_frozen_every_so_many_openings_and_closures():
    schedule = CollectionSchedule(freeze_every=3)
    assert [schedule.opened() for _ in range(6)] == [False, False, True] * 2
    assert [schedule.closed() for _ in range(3)] == [False, False, True]
    assert [schedule.opened(), schedule.closed(), schedule.opened()] == [
        False,
        False,
        True,
    ]


def test_a_full_collection_is_due_when_a_quarter_of_the_open_connections_closed():
    schedule = CollectionSchedule(collect_minimum=10)
    for _ in range(249):
        schedule.closed()
    assert not schedule.collection_due(open_connections=1000)
    schedule.closed()
    assert schedule.collection_due(open_connections=1000)
    schedule.collected()
    assert not schedule.collection_due(open_connections=1000)


def test_a_full_collection_waits_for_the_minimum_number_of_closures():
    schedule = CollectionSchedule(collect_minimum=10)
    for _ in range(9):
        schedule.closed()
    assert not schedule.collection_due(open_connections=0)
    schedule.closed()
    assert schedule.collection_due(open_connections=0)


def test_the_schedule_refuses_nonsense():
    with pytest.raises(ValueError):
        CollectionSchedule(freeze_every=0)
    with pytest.raises(ValueError):
        CollectionSchedule(collect_fraction=0)


# The collector, on this process' real garbage collector


class Node:
    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def test_frozen_objects_are_counted_only_when_a_collection_walked_them(
    unfrozen, monkeypatch
):
    # gc.get_freeze_count() walks every frozen object: ~20 ms at 10,000
    # connections, too much for each scrape of /metrics or each freeze.
    walks = []
    real_count = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: walks.append(1) or real_count())
    collector = GcScheduler()
    collector.start()
    for _ in range(1000):
        collector.freeze()
        assert collector.frozen_objects > 0
    assert len(walks) == 1
    collector.collect()
    assert len(walks) == 2
    assert collector.frozen_objects == real_count()


def test_frozen_cycles_are_skipped_until_a_full_collection(unfrozen):
    collector = GcScheduler()
    collector.start()
    connection = Node()
    connection.other = Node()
    connection.other.other = connection  # a cycle, as a transport's
    collector.freeze()
    # Garbage allocated later that hangs off it, as a closing connection's.
    connection.closing = Node()
    closing = weakref.ref(connection.closing)
    alive = weakref.ref(connection)
    del connection
    gc.collect()
    assert alive() is not None and closing() is not None
    collector.collect()
    assert alive() is None and closing() is None
    assert collector.counters.gc_full_collections == 1
    assert collector.counters.gc_full_collection_seconds > 0


async def test_a_due_collection_runs_once_shortly_after(unfrozen):
    collector = GcScheduler(
        CollectionSchedule(freeze_every=1000, collect_minimum=5), delay=0.05
    )
    for _ in range(20):
        collector.closed(open_connections=0)
    assert collector.counters.gc_full_collections == 0  # not at once
    await eventually(
        lambda: collector.counters.gc_full_collections,
        1,
        "a collection",
        in_thread=False,
    )
    # One for all 20 closures; after its delay, no other came due.
    await asyncio.sleep(2 * collector.delay)
    assert collector.counters.gc_full_collections == 1


# A sidecar: connections' objects are frozen, and freed once closed


def metrics(sidecar: SidecarProcess) -> dict[str, float]:
    with urllib.request.urlopen(sidecar.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.e2e
async def test_closed_connections_are_collected_and_open_ones_frozen(
    redis_url, tmp_path
):
    site = MainSite(f"sqlite:///{tmp_path / 'site.sqlite3'}", redis_url, "collector")
    site.prepare()
    token = site.token("admin")
    sidecar = SidecarProcess.for_site(
        site,
        tmp_path,
        SESAME_MAX_AGE="3600",
        WS_MAX_CONNECTIONS_PER_USER="2000",
        # Hundreds of clients from one address at once.
        WS_MAX_AUTHENTICATING_PER_ADDRESS="0",
    ).start()
    try:
        at_rest = metrics(sidecar)["wsserver_gc_frozen_objects"]
        assert at_rest > 10_000  # start-up's modules, settings, user model

        async def open_and_close_300(times: int, already_open: int = 0) -> None:
            # 300 closures a round; a collection needs 1,000 (the minimum).
            for _round in range(times):
                websockets = await asyncio.gather(
                    *[authenticate(sidecar.url, token) for _ in range(300)]
                )
                await sidecar.until_connections(already_open + 300)
                await asyncio.gather(*[websocket.close() for websocket in websockets])

        def until_collections(count: int) -> dict[str, float]:
            wait_for(
                lambda: metrics(sidecar)["wsserver_gc_full_collections_total"] >= count,
                10,
                f"full collection {count}",
            )
            return metrics(sidecar)

        held = await asyncio.gather(
            *[authenticate(sidecar.url, token) for _ in range(300)]
        )
        await sidecar.until_connections(300)
        await open_and_close_300(4, already_open=300)
        first = until_collections(1)
        # The 300 open connections' objects are skipped by collections.
        assert first["wsserver_gc_frozen_objects"] > at_rest + 300 * 30

        await asyncio.gather(*[websocket.close() for websocket in held])
        await sidecar.until_connections(0)
        # A collection that comes due while the last round's sockets are
        # still closing (a busy machine) finds them alive: the next one,
        # after more closures, must not.
        for collections in range(2, 5):
            await open_and_close_300(4)
            after = until_collections(collections)
            if after["wsserver_gc_frozen_objects"] < at_rest + 300 * 30:
                break
        assert after["wsserver_connections"] == 0
        # Closed connections' objects are gone, not frozen forever.
        assert after["wsserver_gc_frozen_objects"] < at_rest + 300 * 30
        # And the sidecar still serves.
        websocket = await sidecar.connect(token)
        redis.Redis.from_url(redis_url).publish(
            site.env["WSSERVER_CHANNEL"], '{"content_type_id": 1}'
        )
        assert (await receive_event(websocket))["content_type_id"] == 1
        await websocket.close()
    finally:
        sidecar.stop()
