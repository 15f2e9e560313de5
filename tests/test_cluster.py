"""End to end on a Redis Cluster: sharded pub/sub, each sidecar receiving
only what its users need, history and resume across partitions, failover and
resharding without silent loss.

A 3-master, 3-replica cluster started for the module (tests/redisservers.py),
the example site publishing with WSSERVER_REDIS_CLUSTER = True, and two
sidecar processes with WS_REDIS_CLUSTER=true, the demo users spread over them.
Events on different partitions may arrive in any order: what each client
received is compared as a sorted list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time

import pytest
import redis
from clients import assert_no_event, receive_event
from processes import MainSite, SidecarProcess, run_wsserver
from redisservers import redis_cluster
from waiting import eventually, units

from wsserver import partitions
from wsserver.audience import encode_audience
from wsserver.cursors import parse_cursor
from wsserver.wire import PUBLISH_WITH_HISTORY

pytestmark = pytest.mark.e2e

USERS = ["admin", "alice", "bob", "dave"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def cluster_site(cluster, tmp_path_factory, name: str) -> MainSite:
    database = tmp_path_factory.mktemp(name) / "site.sqlite3"
    # Every node as a startup node: any may be the one killed.
    nodes = ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    return MainSite(
        f"sqlite:///{database}",
        f"redis://{nodes}",
        f"cluster-{name}",
        WSSERVER_REDIS_CLUSTER="true",
        WSSERVER_PUBLISH_TIMEOUT="0.5",
    ).prepare()


@pytest.fixture(scope="module")
def site(cluster, tmp_path_factory) -> MainSite:
    return cluster_site(cluster, tmp_path_factory, "site")


@pytest.fixture(scope="module")
def ids(site) -> dict:
    """The demo users' pks, the group's pk and the catalog's content types."""
    script = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.models import Group\n"
        "from django.contrib.contenttypes.models import ContentType\n"
        "users = {u.username: str(u.pk) for u in get_user_model().objects.all()}\n"
        "group = Group.objects.get(name='product-editors').pk\n"
        "cts = {c.model: c.pk for c in ContentType.objects.filter("
        "app_label='catalog')}\n"
        "print(json.dumps({'users': users, 'group': group, 'cts': cts}))\n"
    )
    return json.loads(site.manage("shell", "-c", script).splitlines()[-1])


def sidecar_for(site, tmp_path_factory, **env) -> SidecarProcess:
    return SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("sidecar"),
        WS_REDIS_CLUSTER="true",
        **env,
    )


@pytest.fixture(scope="module")
def sidecars(site, tmp_path_factory):
    first = sidecar_for(site, tmp_path_factory).start()
    second = sidecar_for(site, tmp_path_factory).start()
    yield first, second
    assert first.stop() == 0
    assert second.stop() == 0


def shell(site, code: str) -> str:
    return site.manage("shell", "-c", "from wsserver.publisher import publish\n" + code)


def everyone(ids) -> str:
    return repr(sorted(ids["users"].values()))


async def connected(sidecar: SidecarProcess, token: str):
    """A connection, once the sidecar decided on its token; its first
    message, the cursor of the partitions its user follows, is kept as
    ``websocket.cursor``."""
    websocket = await sidecar.connect(token)
    message = await receive_event(websocket)
    assert message["type"] == "cursor", message
    parse_cursor(message["cursor"])
    websocket.cursor = message["cursor"]
    return websocket


def routed(sidecar: SidecarProcess) -> int:
    return sidecar._metric('wsserver_bus_events_total{outcome="routed"}')


def shard_subscribers(cluster, channel: str) -> int:
    """Subscribers of a sharded channel, over every master."""
    total = 0
    for port in cluster.masters():
        client = redis.Redis(port=port)
        try:
            [(_, count)] = client.pubsub_shardnumsub(channel)
            total += int(count)
        finally:
            client.close()
    return total


def test_partitions_spread_evenly_over_the_masters(cluster):
    # 256 partitions, 64 slots apart: three masters with equal slot ranges
    # carry 85 or 86 each.
    owners = [
        cluster.master_for_slot(partitions.slot_of(p))
        for p in range(partitions.PARTITIONS)
    ]
    counts = sorted(owners.count(port) for port in set(owners))
    assert len(counts) == 3
    assert counts[-1] - counts[0] <= 1


async def test_every_audience_reaches_exactly_its_users(site, ids, sidecars):
    first, second = sidecars
    clients = {
        "admin": await connected(first, site.token("admin")),
        "alice": await connected(first, site.token("alice")),
        "bob": await connected(second, site.token("bob")),
        "dave": await connected(second, site.token("dave")),
        "alice2": await connected(second, site.token("alice")),
    }
    try:
        shell(
            site,
            f"publish('to.alice', {{'n': 1}}, users=[{ids['users']['alice']!r}])\n"
            f"publish('to.bob', None, users=[{ids['users']['bob']!r}])\n"
            "publish('to.group', None, groups=['product-editors'])\n"
            "publish('to.view_article', None, permissions=['catalog.view_article'])\n"
            "publish('to.change_product', None,"
            " permissions=['catalog.change_product'])\n"
            "publish('to.root', None, permissions=['catalog.delete_article'])\n"
            "publish('to.article.model', None, models=['catalog.article'])\n"
            "publish('to.product.model', None, models=['catalog.product'])\n"
            # Partitions of a union: each recipient once, whichever copy.
            "publish('union', None, users=["
            + repr(ids["users"]["alice"])
            + ","
            + repr(ids["users"]["bob"])
            + "], groups=['product-editors'],"
            " permissions=['catalog.change_product', 'catalog.view_article'],"
            " models=['catalog.product'])\n"
            # An admin LogEntry: routed by its content type's partition.
            "from django.contrib.admin.models import LogEntry, ADDITION\n"
            "from django.contrib.auth import get_user_model\n"
            "from catalog.models import Product\n"
            "product = Product.objects.create(name='Cluster', price=1)\n"
            "LogEntry.objects.log_actions(get_user_model().objects.get("
            "username='admin').pk, [product], ADDITION, single_object=True)\n"
            f"publish('sentinel', None, users={everyone(ids)})\n",
        )
        expected = {
            "admin": sorted(
                [
                    "to.view_article",
                    "to.change_product",
                    "to.root",
                    "to.article.model",
                    "to.product.model",
                    "union",
                ]
            ),
            "alice": sorted(
                ["to.alice", "to.view_article", "to.article.model", "union"]
            ),
            "bob": sorted(["to.bob", "union"]),
            "dave": sorted(
                ["to.group", "to.change_product", "to.product.model", "union"]
            ),
        }
        expected["alice2"] = expected["alice"]
        for name, websocket in clients.items():
            received = []
            while True:
                message = await receive_event(websocket, 10)
                if message.get("event") == "sentinel":
                    break
                received.append(message.get("event") or f"admin.{message['action']}")
            while True:
                try:
                    message = await receive_event(websocket, 0.3)
                except TimeoutError:
                    break
                received.append(message.get("event") or f"admin.{message['action']}")
            # The LogEntry goes to those who may view or change products.
            admin_event = ["admin.addition"] if name in {"admin", "dave"} else []
            assert sorted(received) == sorted(expected[name] + admin_event), name
    finally:
        for websocket in clients.values():
            await websocket.close()


async def test_a_sidecar_receives_only_what_its_connections_need(
    cluster, site, ids, sidecars
):
    first, second = sidecars
    await first.until_connections(0)
    await second.until_connections(0)
    alice = await connected(first, site.token("alice"))
    # Someone whose partition no connection of the first sidecar follows.
    alice_partitions = {
        partitions.partition_of(user=ids["users"]["alice"]),
        partitions.partition_of(permission="catalog.view_article"),
        partitions.partition_of(content_type=ids["cts"]["article"]),
    }
    other = next(
        name
        for name in ("bob", "dave", "admin")
        if partitions.partition_of(user=ids["users"][name]) not in alice_partitions
    )
    partition = partitions.partition_of(user=ids["users"][other])
    channel = partitions.channel_of(site.env["WSSERVER_CHANNEL"], partition)
    assert shard_subscribers(cluster, channel) == 0
    websocket = await connected(second, site.token(other))
    assert shard_subscribers(cluster, channel) == 1  # the second sidecar only
    before = routed(first), routed(second)
    shell(
        site,
        "for n in range(20):\n"
        f"    publish('personal', {{'n': n}}, users=[{ids['users'][other]!r}])\n",
    )
    for n in range(20):
        assert (await receive_event(websocket))["data"] == {"n": n}
    assert routed(second) - before[1] == 20
    assert routed(first) == before[0]  # not one message for the other user
    await assert_no_event(alice)

    # The subscription ends with the last connection that needed it.
    await websocket.close()
    await second.until_connections(0)
    await eventually(
        lambda: shard_subscribers(cluster, channel) == 0, 5, "the unsubscription"
    )
    await alice.close()


async def test_a_sidecar_with_no_connection_receives_nothing(site, ids, sidecars):
    first, _ = sidecars
    await first.until_connections(0)
    before = routed(first)
    shell(
        site,
        f"publish('to.everyone', None, users={everyone(ids)},"
        " groups=['product-editors'], permissions=['catalog.view_article'],"
        " models=['catalog.article'])\n",
    )
    await asyncio.sleep(units(0.5))
    assert routed(first) == before


def cursor_of(cursor: str, ids: list[str]) -> str:
    """What wsserver.js keeps: the last id of each partition, joined."""
    last: dict[str, str] = {}
    for event_id in [*cursor.split(","), *ids]:
        last[event_id.split(":", 1)[0]] = event_id
    return ",".join(last.values())


async def cursor_message(websocket) -> str:
    """The cursor a resume ends with."""
    message = await receive_event(websocket)
    assert message["type"] == "cursor", message
    return message["cursor"]


async def test_resume_on_another_sidecar_covers_every_partition(site, ids, sidecars):
    from clients import authenticate

    first, second = sidecars
    alice = await connected(first, site.token("alice"))
    shell(
        site,
        f"publish('before.personal', None, users=[{ids['users']['alice']!r}])\n"
        "publish('before.permission', None, permissions=['catalog.view_article'])\n",
    )
    seen = [(await receive_event(alice))["id"] for _ in range(2)]
    cursor = cursor_of(alice.cursor, seen)
    assert len(parse_cursor(cursor)) >= 3  # her own, her permission's, her model's
    await alice.close()
    await first.until_connections(0)
    shell(
        site,
        f"publish('missed.personal', None, users=[{ids['users']['alice']!r}])\n"
        "publish('missed.permission', None, permissions=['catalog.view_article'])\n"
        # A partition she had received nothing from: in the cursor too.
        "publish('missed.model', None, models=['catalog.article'])\n"
        f"publish('not.for.alice', None, users=[{ids['users']['bob']!r}])\n"
        "publish('not.for.alice', None, permissions=['catalog.change_product'])\n",
    )
    websocket = await authenticate(
        second.url,
        json.dumps({"token": site.token("alice"), "last_event_id": cursor}),
    )
    replayed = [await receive_event(websocket) for _ in range(3)]
    assert sorted(m["event"] for m in replayed) == [
        "missed.model",
        "missed.permission",
        "missed.personal",
    ]
    after_replay = await cursor_message(websocket)
    await assert_no_event(websocket)
    # Then live events, and a resume from the newer cursor replays nothing.
    shell(site, f"publish('live', None, users=[{ids['users']['alice']!r}])\n")
    live = await receive_event(websocket)
    assert live["event"] == "live"
    cursor = cursor_of(cursor, [*(m["id"] for m in replayed)])
    cursor = cursor_of(cursor, [*after_replay.split(","), live["id"]])
    await websocket.close()
    again = await authenticate(
        first.url,
        json.dumps({"token": site.token("alice"), "last_event_id": cursor}),
    )
    await cursor_message(again)
    await assert_no_event(again)
    await again.close()


async def test_group_membership_changes_apply_to_the_next_event(site, ids, sidecars):
    # Bob's new group is on a partition his sidecar did not follow: it
    # subscribes, and sends what the group got since the change.
    first, second = sidecars
    bob = await connected(first, site.token("bob"))
    dave = await connected(second, site.token("dave"))
    try:
        shell(
            site,
            "from django.contrib.auth import get_user_model\n"
            "from django.contrib.auth.models import Group\n"
            "User = get_user_model()\n"
            "group = Group.objects.get(name='product-editors')\n"
            "group.user_set.add(User.objects.get(username='bob'))\n"
            "group.user_set.remove(User.objects.get(username='dave'))\n"
            "publish('group.news', None, groups=[group])\n"
            f"publish('sentinel', None, users={everyone(ids)})\n",
        )
        received = {}
        for name, websocket in (("bob", bob), ("dave", dave)):
            names = []
            while (message := await receive_event(websocket, 10))[
                "event"
            ] != "sentinel":
                names.append(message["event"])
            with contextlib.suppress(TimeoutError):
                names.append((await receive_event(websocket, 0.5))["event"])
            received[name] = names
        assert received == {"bob": ["group.news"], "dave": []}
    finally:
        shell(
            site,
            "from django.contrib.auth import get_user_model\n"
            "from django.contrib.auth.models import Group\n"
            "User = get_user_model()\n"
            "group = Group.objects.get(name='product-editors')\n"
            "group.user_set.remove(User.objects.get(username='bob'))\n"
            "group.user_set.add(User.objects.get(username='dave'))\n",
        )
        await bob.close()
        await dave.close()


async def test_a_resume_sends_an_event_of_several_partitions_once(site, ids, sidecars):
    from clients import authenticate

    first, second = sidecars
    group = partitions.partition_of(group=ids["group"])
    permission = partitions.partition_of(permission="catalog.change_product")
    assert group != permission  # two copies, both followed by dave
    dave = await connected(first, site.token("dave"))
    shell(site, f"publish('before', None, users=[{ids['users']['dave']!r}])\n")
    cursor = cursor_of(dave.cursor, [(await receive_event(dave))["id"]])
    await dave.close()
    shell(
        site,
        "publish('missed.once', None, groups=['product-editors'],"
        " permissions=['catalog.change_product'])\n",
    )
    websocket = await authenticate(
        second.url,
        json.dumps({"token": site.token("dave"), "last_event_id": cursor}),
    )
    assert (await receive_event(websocket))["event"] == "missed.once"
    await cursor_message(websocket)
    await assert_no_event(websocket)
    await websocket.close()


async def test_a_resume_from_a_fresh_cursor_is_no_gap(site, sidecars):
    # A superuser follows all 256 shared partitions, most with no stream
    # yet ("p:0-0" in the cursor): resuming from it reloads nothing.
    from clients import authenticate

    first, second = sidecars
    admin = await connected(first, site.token("admin"))
    assert ":0-0" in admin.cursor
    assert len(parse_cursor(admin.cursor)) == 257
    await admin.close()
    websocket = await authenticate(
        second.url,
        json.dumps({"token": site.token("admin"), "last_event_id": admin.cursor}),
    )
    # Nothing to replay, no gap: at most a cursor.
    with contextlib.suppress(TimeoutError):
        while True:
            message = await receive_event(websocket, 0.5)
            assert message["type"] == "cursor", message
    await websocket.close()


async def test_a_resume_from_an_id_of_one_redis_reports_a_gap(site, sidecars):
    from clients import authenticate

    first, _ = sidecars
    websocket = await authenticate(
        first.url,
        json.dumps({"token": site.token("alice"), "last_event_id": "1-0"}),
    )
    message = await receive_event(websocket)
    assert message == {"type": "resume_gap", "last_event_id": "1-0"}
    await websocket.close()


# Publishing steadily while the cluster changes.

PUBLISHER = """
import time
from wsserver.audience import encode_audience
from wsserver.publisher.publishing import Outgoing, send
audience = encode_audience(users=USERS)
for n in range(COUNT):
    ok = send([Outgoing({'event': 'steady', 'data': {'n': n}}, audience=audience)])
    print(n, int(ok), time.time(), flush=True)
    time.sleep(INTERVAL)
"""


def steady_publisher(site, users: list[str], count: int, interval: float):
    """A main site process publishing ``count`` events, one per ``interval``
    seconds, to ``users``; it prints each one's number, outcome and time."""
    code = (
        PUBLISHER.replace("USERS", repr(users))
        .replace("COUNT", str(count))
        .replace("INTERVAL", str(interval))
    )
    return subprocess.Popen(
        [site.python, str(site.manage_py), "shell", "-c", code],
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def collect(websocket, until: float) -> tuple[list[int], list[dict]]:
    """The steady events' numbers received until ``until`` (monotonic), and
    the resume_gap messages."""
    numbers, gaps = [], []
    while time.monotonic() < until:
        try:
            message = await receive_event(websocket, 0.5)
        except TimeoutError:
            continue
        if message.get("type") == "resume_gap":
            gaps.append(message)
        elif message.get("event") == "steady":
            numbers.append(message["data"]["n"])
    return numbers, gaps


async def publish_through(site, ids, sidecars, change) -> dict:
    """Publish steadily to alice and bob (on both sidecars) while ``change``
    runs; check that each client got every event published or resume_gap,
    without duplicates, and that publishing works again 5 s after the change
    began. Return what each client got."""
    first, second = sidecars
    clients = {
        "alice@1": await connected(first, site.token("alice")),
        "bob@1": await connected(first, site.token("bob")),
        "alice@2": await connected(second, site.token("alice")),
        "bob@2": await connected(second, site.token("bob")),
    }
    users = [ids["users"]["alice"], ids["users"]["bob"]]
    count, interval = 400, 0.02
    publisher = steady_publisher(site, users, count, interval)
    until = time.monotonic() + count * interval + units(20)
    collecting = {
        name: asyncio.create_task(collect(websocket, until))
        for name, websocket in clients.items()
    }
    await asyncio.sleep(count * interval / 4)
    changed_at = time.time()
    await asyncio.to_thread(change)
    out, err = await asyncio.to_thread(publisher.communicate)
    assert publisher.returncode == 0, err
    outcomes = [
        fields
        for line in out.splitlines()
        if len(fields := line.split()) == 3 and fields[1] in {"0", "1"}
    ]
    assert len(outcomes) == count, out + err
    published = {int(n) for n, ok, _ in outcomes if ok == "1"}
    later = [int(n) for n, _, at in outcomes if float(at) > changed_at + 5]
    assert later, "the change took too long to test the 5 s"
    assert all(n in published for n in later), "publishing did not resume in 5 s"
    results: dict = {"published": len(published), "failed": count - len(published)}
    for name, task in collecting.items():
        numbers, gaps = await task
        assert len(numbers) == len(set(numbers)), f"{name}: duplicates"
        # A failed publication may have reached some partitions before the
        # one that failed: some received it, and the publisher logged it.
        missing = published - set(numbers)
        assert not missing or gaps, f"{name}: {len(missing)} missed, no resume_gap"
        results[name] = {"received": len(numbers), "gaps": len(gaps)}
        await clients[name].close()
    print(results)
    return results


async def test_a_lost_subscription_is_backfilled_from_the_stream(
    cluster, site, ids, sidecars
):
    _, second = sidecars
    bob = await connected(second, site.token("bob"))
    channel = site.env["WSSERVER_CHANNEL"]
    partition = partitions.partition_of(user=ids["users"]["bob"])
    slot = partitions.slot_of(partition)
    node = redis.Redis(port=cluster.master_for_slot(slot))
    before = second._metric("wsserver_bus_backfilled_total")
    audience = encode_audience(users=[ids["users"]["bob"]])
    with node.pipeline(transaction=False) as pipeline:
        # The sidecars' subscriptions end, then ten events go by unseen.
        pipeline.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for n in range(10):
            pipeline.eval(
                PUBLISH_WITH_HISTORY,
                1,
                partitions.history_key_of(channel, partition),
                json.dumps({"event": "unseen", "data": {"n": n}}),
                10_000,
                partitions.channel_of(channel, partition),
                "",
                audience,
                f"{partition}:",
                "sharded",
            )
        pipeline.execute()
    node.close()
    for n in range(10):
        message = await receive_event(bob, 10)
        assert message["data"] == {"n": n}
        assert message["id"].startswith(f"{partition}:")
    await assert_no_event(bob)
    assert second._metric("wsserver_bus_backfilled_total") - before == 10
    await bob.close()


async def test_access_is_read_again_before_a_lost_partition_is_caught_up(
    cluster, site, ids, sidecars
):
    # Dave leaves the group without a word to the sidecars (raw SQL: no
    # signal, no control message); then his sidecar's subscription to the
    # group's partition ends and a group event goes by unseen. Catching up,
    # the sidecar reads access again before it sends what it missed.
    _, second = sidecars
    dave = await connected(second, site.token("dave"))
    channel = site.env["WSSERVER_CHANNEL"]
    partition = partitions.partition_of(group=ids["group"])
    leave = (
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('DELETE FROM auth_user_groups WHERE user_id = %s"
        f" AND group_id = %s', [{ids['users']['dave']}, {ids['group']}])\n"
    )
    site.manage("shell", "-c", leave)
    node = redis.Redis(port=cluster.master_for_slot(partitions.slot_of(partition)))
    try:
        with node.pipeline(transaction=False) as pipeline:
            pipeline.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            pipeline.eval(
                PUBLISH_WITH_HISTORY,
                1,
                partitions.history_key_of(channel, partition),
                json.dumps({"event": "for.the.group", "data": None}),
                10_000,
                partitions.channel_of(channel, partition),
                "",
                encode_audience(groups=[ids["group"]]),
                f"{partition}:",
                "sharded",
            )
            pipeline.execute()
        await eventually(
            lambda: second._metric("wsserver_bus_backfilled_total") > 0,
            10,
            "the backfill",
        )
        await assert_no_event(dave, 1)
    finally:
        node.close()
        site.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model\n"
            "from django.contrib.auth.models import Group\n"
            "Group.objects.get(name='product-editors').user_set.add("
            "get_user_model().objects.get(username='dave'))\n",
        )
        await dave.close()


async def test_a_master_killed_while_publishing(cluster, site, ids, sidecars):
    # The master of alice's partition (bob's may be on another).
    partition = partitions.partition_of(user=ids["users"]["alice"])
    slot = partitions.slot_of(partition)
    master = cluster.master_for_slot(slot)

    def change():
        cluster.kill_master(master)
        cluster.wait_failover(master)

    results = await publish_through(site, ids, sidecars, change)
    assert results["published"] > 200


async def test_a_slot_moved_while_publishing(cluster, site, ids, sidecars):
    partition = partitions.partition_of(user=ids["users"]["bob"])
    slot = partitions.slot_of(partition)
    source = cluster.master_for_slot(slot)
    target = next(port for port in cluster.masters() if port != source)

    def change():
        cluster.reshard(range(slot - slot % 64, slot - slot % 64 + 64), target)

    results = await publish_through(site, ids, sidecars, change)
    assert cluster.master_for_slot(slot) == target
    assert results["published"] == 400  # a move loses no publication
    for name in ("alice@1", "bob@1", "alice@2", "bob@2"):
        assert results[name]["received"] == 400 or results[name]["gaps"], name


def test_a_sidecar_in_cluster_mode_refuses_a_plain_redis(tmp_path):
    result = run_wsserver(
        {
            **SidecarProcess(tmp_path).env,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "WS_REDIS_CLUSTER": "true",
        }
    )
    assert result.returncode == 1
    assert "WS_REDIS_CLUSTER is set, but REDIS_URL names a Redis without" in (
        result.stdout + result.stderr
    )


def test_a_sidecar_in_plain_mode_refuses_a_cluster_node(cluster, tmp_path):
    result = run_wsserver({**SidecarProcess(tmp_path).env, "REDIS_URL": cluster.url})
    assert result.returncode == 1
    assert "REDIS_URL names a Redis Cluster node: set WS_REDIS_CLUSTER=true" in (
        result.stdout + result.stderr
    )


def test_the_check_verifies_the_cluster(site, sidecars):
    first, _ = sidecars
    check = run_wsserver(first.env, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "redis: Redis Cluster 127.0.0.1:" in check.stdout


def test_a_publisher_in_cluster_mode_says_the_redis_is_not_a_cluster(tmp_path_factory):
    site = MainSite(
        f"sqlite:///{tmp_path_factory.mktemp('plain') / 'site.sqlite3'}",
        "redis://127.0.0.1:6379/0",
        "cluster-refused",
        WSSERVER_REDIS_CLUSTER="true",
    )
    result = subprocess.run(
        [
            site.python,
            str(site.manage_py),
            "shell",
            "-c",
            "from wsserver.publisher.publishing import Outgoing, send\n"
            "print(send([Outgoing({'event': 'x'}, audience='{\"users\":[\"1\"]}')]))\n",
        ],
        env=site.env,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.stdout.strip().endswith("False")
    assert (
        "WSSERVER_REDIS_CLUSTER is set, but WSSERVER_REDIS_URL names a Redis "
        "without cluster mode"
    ) in result.stderr


def test_a_publisher_setting_that_cannot_be_parsed_fails_the_check(tmp_path_factory):
    site = MainSite(
        f"sqlite:///{tmp_path_factory.mktemp('bad') / 'site.sqlite3'}",
        "redis://a:1,b:2",
        "cluster-bad",
    )
    result = subprocess.run(
        [site.python, str(site.manage_py), "check"],
        env=site.env,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.returncode != 0
    assert "wsserver.E003" in result.stderr
    assert "set WSSERVER_REDIS_CLUSTER = True" in result.stderr
