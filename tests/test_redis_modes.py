"""End to end on one Redis, Sentinel and TLS, each a throwaway server
(tests/redisservers.py): the subscriber reads what it missed from the
history when its subscription comes back, or tells the clients they missed
some; Sentinel failovers keep clients connected; TLS with a CA file works for
the sidecar, the publisher and ``wsserver check``, on one server and on a
Redis Cluster.
"""

from __future__ import annotations

import json

import pytest
import redis
from clients import assert_no_event, receive_event
from processes import MainSite, SidecarProcess, run_wsserver
from redis.backoff import NoBackoff
from redis.retry import Retry
from redisservers import RedisServer, redis_cluster, sentinel_group, tls_redis
from waiting import units

from wsserver.audience import encode_audience
from wsserver.cursors import parse_cursor
from wsserver.events import split_event_id
from wsserver.partitions import channel_of, slot_of
from wsserver.wire import PUBLISH_WITH_HISTORY, history_key

pytestmark = pytest.mark.e2e


def make_site(tmp_path_factory, redis_url: str, name: str, **env) -> MainSite:
    database = tmp_path_factory.mktemp(name) / "site.sqlite3"
    return MainSite(
        f"sqlite:///{database}",
        redis_url,
        f"modes-{name}",
        WSSERVER_PUBLISH_TIMEOUT="0.5",
        **env,
    ).prepare()


def user_ids(site) -> dict[str, str]:
    script = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "print(json.dumps({u.username: str(u.pk) for u in "
        "get_user_model().objects.all()}))\n"
    )
    return json.loads(site.manage("shell", "-c", script).splitlines()[-1])


def shell(site, code: str) -> str:
    return site.manage("shell", "-c", "from wsserver.publisher import publish\n" + code)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("plain"), "plain").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_site(plain, tmp_path_factory):
    return make_site(tmp_path_factory, f"redis://127.0.0.1:{plain.port}/0", "plain")


@pytest.fixture(scope="module")
def plain_sidecar(plain_site, tmp_path_factory):
    sidecar = SidecarProcess.for_site(plain_site, tmp_path_factory.mktemp("sidecar"))
    yield sidecar.start()
    assert sidecar.stop() == 0


def publish_unseen(server: RedisServer, channel: str, user_id: str, count: int):
    """End the sidecars' subscriptions, then publish ``count`` events to a
    user before they can subscribe again (one pipeline: Redis runs it whole)."""
    client = server.client(decode=False)
    audience = encode_audience(users=[user_id])
    with client.pipeline(transaction=False) as pipeline:
        pipeline.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for n in range(count):
            pipeline.eval(
                PUBLISH_WITH_HISTORY,
                1,
                history_key(channel),
                json.dumps({"event": "unseen", "data": {"n": n}}),
                10_000,
                channel,
                "",
                audience,
            )
        pipeline.execute()
    return client


async def test_events_missed_by_the_subscriber_are_read_from_the_history(
    plain, plain_site, plain_sidecar
):
    ids = user_ids(plain_site)
    bob = await plain_sidecar.connect(plain_site.token("bob"))
    before = plain_sidecar._metric("wsserver_bus_backfilled_total")
    publish_unseen(plain, plain_site.env["WSSERVER_CHANNEL"], ids["bob"], 10).close()
    for n in range(10):
        assert (await receive_event(bob, 10))["data"] == {"n": n}
    await assert_no_event(bob)
    assert plain_sidecar._metric("wsserver_bus_backfilled_total") - before == 10
    # Live events go on, once each.
    shell(plain_site, f"publish('live', None, users=[{ids['bob']!r}])\n")
    assert (await receive_event(bob))["event"] == "live"
    await assert_no_event(bob)
    await bob.close()


async def test_events_missed_and_gone_from_the_history_are_reported(
    plain, plain_site, plain_sidecar
):
    ids = user_ids(plain_site)
    bob = await plain_sidecar.connect(plain_site.token("bob"))
    alice = await plain_sidecar.connect(plain_site.token("alice"))
    channel = plain_site.env["WSSERVER_CHANNEL"]
    before = plain_sidecar._metric("wsserver_bus_gaps_total")
    client = publish_unseen(plain, channel, ids["bob"], 3)
    client.xtrim(history_key(channel), maxlen=0)  # before the sidecar is back
    client.close()
    # Every connection may have missed something: each is told.
    for websocket in (bob, alice):
        message = await receive_event(websocket, 10)
        assert message["type"] == "resume_gap"
    assert plain_sidecar._metric("wsserver_bus_gaps_total") - before == 1
    shell(plain_site, f"publish('after.the.gap', None, users=[{ids['bob']!r}])\n")
    assert (await receive_event(bob))["event"] == "after.the.gap"
    await assert_no_event(alice)
    await bob.close()
    await alice.close()


# Sentinel


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    with sentinel_group(tmp_path_factory.mktemp("sentinel")) as group:
        yield group


async def test_a_sentinel_failover_keeps_clients_connected(sentinels, tmp_path_factory):
    site = make_site(tmp_path_factory, sentinels.url, "sentinel")
    sidecar = SidecarProcess.for_site(site, tmp_path_factory.mktemp("sidecar"))
    sidecar.start()
    try:
        ids = user_ids(site)
        bob = await sidecar.connect(site.token("bob"))
        shell(site, f"publish('before', None, users=[{ids['bob']!r}])\n")
        assert (await receive_event(bob))["event"] == "before"

        sentinels.kill_master()
        new_master = sentinels.wait_failover()
        assert new_master != sentinels.master_port

        # The same connection: delivery resumes once the sidecar found the
        # new master (the publisher finds it too).
        async def delivered() -> bool:
            shell(site, f"publish('after', None, users=[{ids['bob']!r}])\n")
            try:
                while (await receive_event(bob, 1))["event"] != "after":
                    pass
            except TimeoutError:
                return False
            return True

        for _ in range(int(units(20))):
            if await delivered():
                break
        else:
            raise AssertionError(f"no delivery after the failover:\n{sidecar.log()}")
        assert sidecar.connections() == 1
        await bob.close()
    finally:
        assert sidecar.stop() == 0


# TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    with tls_redis(tmp_path_factory.mktemp("tls")) as server:
        yield server


async def test_sidecar_and_publisher_over_tls(tls, tmp_path_factory):
    site = make_site(
        tmp_path_factory, tls.url, "tls", WSSERVER_REDIS_CA_FILE=tls.ca_file
    )
    sidecar = SidecarProcess.for_site(
        site, tmp_path_factory.mktemp("sidecar"), WS_REDIS_CA_FILE=tls.ca_file
    )
    sidecar.start()
    try:
        ids = user_ids(site)
        alice = await sidecar.connect(site.token("alice"))
        shell(site, f"publish('over.tls', {{'n': 1}}, users=[{ids['alice']!r}])\n")
        message = await receive_event(alice)
        assert message["event"] == "over.tls"
        assert message["id"]  # kept in the history, over TLS too
        await alice.close()
        check = run_wsserver(sidecar.env, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "answers" in check.stdout
    finally:
        assert sidecar.stop() == 0


def test_without_the_ca_file_tls_is_refused(tls, tmp_path):
    sidecar = SidecarProcess(tmp_path, REDIS_URL=tls.url)
    check = run_wsserver(sidecar.env, "check")
    assert check.returncode != 0
    assert "certificate verify failed" in check.stdout + check.stderr


def test_a_missing_ca_file_is_a_configuration_error(tls, tmp_path):
    sidecar = SidecarProcess(
        tmp_path, REDIS_URL=tls.url, WS_REDIS_CA_FILE=str(tmp_path / "nope.pem")
    )
    result = run_wsserver(sidecar.env)
    assert result.returncode == 2
    assert "WS_REDIS_CA_FILE: no such file" in result.stderr


# TLS on a Redis Cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls-cluster")
    with redis_cluster(directory, replicas_per_master=0, tls=True) as cluster:
        yield cluster


def test_the_tls_cluster_has_no_plain_port(tls_cluster):
    for port in tls_cluster.ports:
        node = tls_cluster.server(port)
        assert node.query("CONFIG", "GET", "port") == ["port", "0"]
        assert node.query("CONFIG", "GET", "tls-cluster") == ["tls-cluster", "yes"]
    plain = redis.Redis(
        "127.0.0.1",
        tls_cluster.ports[0],
        socket_timeout=units(5),
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


async def test_sidecar_and_publisher_over_tls_on_a_cluster(
    tls_cluster, tmp_path_factory
):
    nodes = ",".join(f"127.0.0.1:{port}" for port in tls_cluster.ports)
    site = make_site(
        tmp_path_factory,
        f"rediss://{nodes}",
        "tls-cluster",
        WSSERVER_REDIS_CLUSTER="true",
        WSSERVER_REDIS_CA_FILE=tls_cluster.ca_file,
    )
    assert site.env["WSSERVER_REDIS_URL"].startswith("rediss://")
    sidecar = SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("sidecar"),
        WS_REDIS_CLUSTER="true",
        WS_REDIS_CA_FILE=tls_cluster.ca_file,
    )
    sidecar.start()
    try:
        ids = user_ids(site)
        followed = set()
        clients = {}
        for name in ("alice", "dave"):
            clients[name] = await sidecar.connect(site.token(name))
            cursor = await receive_event(clients[name])
            assert cursor["type"] == "cursor", cursor
            followed |= set(parse_cursor(cursor["cursor"]))
        # A user partition and shared ones (dave's group's...), each
        # subscribed on the master that owns it, over TLS: more than one.
        owners = {p: tls_cluster.master_for_slot(slot_of(p)) for p in followed}
        channel = site.env["WSSERVER_CHANNEL"]
        subscribed = {
            port: set(tls_cluster.server(port).query("PUBSUB", "SHARDCHANNELS"))
            for port in set(owners.values())
        }
        for partition, port in owners.items():
            assert channel_of(channel, partition) in subscribed[port], partition
        assert len(subscribed) >= 2, owners

        shell(
            site,
            f"publish('to.alice', {{'n': 1}}, users=[{ids['alice']!r}])\n"
            "publish('to.group', {'n': 2}, groups=['product-editors'])\n",
        )
        personal = await receive_event(clients["alice"])
        shared = await receive_event(clients["dave"])
        assert (personal["event"], shared["event"]) == ("to.alice", "to.group")
        # Kept in the history of a user partition and of a shared one.
        assert isinstance(split_event_id(personal["id"])[0], str)
        assert isinstance(split_event_id(shared["id"])[0], int)
        for websocket in clients.values():
            await assert_no_event(websocket)
            await websocket.close()
        check = run_wsserver(sidecar.env, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "Redis Cluster 127.0.0.1:" in check.stdout
    finally:
        assert sidecar.stop() == 0


def test_sentinel_check_names_the_master(sentinels, tmp_path):
    sidecar = SidecarProcess(tmp_path, REDIS_URL=sentinels.url)
    check = run_wsserver(sidecar.env, "check")
    assert "Sentinel 127.0.0.1:" in check.stdout
    assert "master 'mymaster'" in check.stdout
