"""The throwaway Redis servers of redisservers.py, with real servers."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.crc import key_slot
from redis.retry import Retry
from redisservers import (
    SLOTS,
    RedisCluster,
    RedisServer,
    RedisServerError,
    key_for_slot,
    redis_cluster,
    sentinel_group,
    tls_redis,
)
from waiting import units, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A cluster for the tests that leave it as it is."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def cluster_client(port: int) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(
        host="127.0.0.1", port=port, decode_responses=True
    )


def slot_owners(cluster: RedisCluster, port: int) -> dict[int, int]:
    """Slot -> master port, from CLUSTER SLOTS as node ``port`` answers it."""
    owners = {}
    for start, end, master, *_replicas in cluster.server(port).query(
        "CLUSTER", "SLOTS"
    ):
        for slot in range(start, end + 1):
            owners[slot] = int(master[1])
    return owners


def test_cluster_serves_all_slots(cluster: RedisCluster) -> None:
    assert len(cluster.ports) == 6
    assert 6379 not in cluster.ports
    assert all(port < 55000 for port in cluster.ports)
    masters = cluster.masters()
    assert len(masters) == 3
    assert cluster.url == f"redis://127.0.0.1:{masters[0]}"
    assert cluster.urls_csv.split(",") == [
        f"redis://127.0.0.1:{port}" for port in masters
    ]
    for port in cluster.ports:
        info = cluster.cluster_info(port)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == str(SLOTS)
        assert info["cluster_known_nodes"] == "6"
        assert info["cluster_size"] == "3"
        assert len(slot_owners(cluster, port)) == SLOTS
    for port in masters:
        assert len(cluster.replicas_of(port)) == 1

    client = cluster_client(masters[0])
    try:
        for slot in (0, 8000, 16383):
            key = key_for_slot(slot)
            assert client.cluster_keyslot(key) == slot
            client.set(key, f"value {slot}")
        for slot in (0, 8000, 16383):
            assert client.get(key_for_slot(slot)) == f"value {slot}"
    finally:
        client.close()
    # Three slots, three masters: the keys went to every master.
    assert len({cluster.master_for_slot(slot) for slot in (0, 8000, 16383)}) == 3


def test_sharded_pubsub_across_nodes(cluster: RedisCluster) -> None:
    first, second = "events{a}", "events{b}"
    owners = [cluster.master_for_slot(key_slot(c.encode())) for c in (first, second)]
    assert owners[0] != owners[1]
    client = cluster_client(cluster.ports[0])
    pubsub = client.pubsub()
    # On a replica too: shard channels reach every node of the shard.
    replica = cluster.client(cluster.replicas_of(owners[0])[0]).pubsub()
    try:
        pubsub.ssubscribe(first, second)
        replica.ssubscribe(first)
        wait_for(
            lambda: replica.get_message(timeout=0.1), 5, "replica ssubscribe reply"
        )
        # Wait for both subscriptions to be confirmed by their nodes.
        confirmed = set()
        wait_for(
            lambda: _collect(pubsub, "ssubscribe", confirmed) >= {first, second},
            5,
            "ssubscribe replies",
        )
        # The count is of the publishing node's subscribers only: not the
        # replica's, which gets the message all the same.
        assert client.spublish(first, "one") == 1
        assert client.spublish(second, "two") == 1
        received = set()
        wait_for(
            lambda: (
                _collect(pubsub, "smessage", received, data=True)
                >= {(first, "one"), (second, "two")}
            ),
            5,
            "both shard messages",
        )
        message = wait_for(
            lambda: replica.get_message(timeout=0.1), 5, "the message on the replica"
        )
        assert (message["type"], message["data"]) == ("smessage", "one")
    finally:
        replica.close()
        pubsub.close()
        client.close()


def _collect(pubsub: PubSub, kind: str, seen: set, data: bool = False) -> set:
    message = pubsub.get_sharded_message(timeout=0.1)
    if message is not None and message["type"] == kind:
        channel = message["channel"]
        seen.add((channel, message["data"]) if data else channel)
    return seen


def test_cluster_failover(tmp_path: Path) -> None:
    with redis_cluster(tmp_path) as cluster:
        victim = cluster.masters()[1]
        replica = cluster.replicas_of(victim)[0]
        slots = cluster.slots_of(victim)
        slot = min(slots)
        key = key_for_slot(slot)
        cluster.client(victim).set(key, "before")
        assert cluster.client(victim).wait(1, int(units(5) * 1000)) == 1

        started = time.monotonic()
        cluster.kill_master(victim)
        promoted = cluster.wait_failover(victim)
        print(f"failover in {time.monotonic() - started:.2f} s")

        assert promoted == replica
        survivors = [port for port in cluster.ports if port != victim]
        for port in survivors:
            assert cluster.cluster_info(port)["cluster_state"] == "ok"
            owners = slot_owners(cluster, port)
            assert len(owners) == SLOTS
            assert {owners[s] for s in slots} == {promoted}
        assert victim not in cluster.masters()
        assert promoted in cluster.masters()
        assert cluster.server(promoted).query("ROLE")[0] == "master"
        client = cluster_client(survivors[0])
        try:
            assert client.get(key) == "before"
            client.set(key, "after")
            assert cluster.client(promoted).get(key) == "after"
        finally:
            client.close()
        assert "Failover election won" in cluster.node_log(promoted)


def test_cluster_reshard(tmp_path: Path) -> None:
    with redis_cluster(tmp_path) as cluster:
        first, second, third = cluster.masters()
        # Across the first two masters' ranges (0-5460, 5461-10922).
        moving = range(5400, 5520)
        before = slot_owners(cluster, first)
        assert {before[slot] for slot in moving} == {first, second}
        keys = {
            slot: key_for_slot(slot) for slot in (5399, 5400, 5460, 5461, 5519, 5520)
        }
        client = cluster_client(first)
        try:
            for slot, key in keys.items():
                assert cluster.server(first).query("CLUSTER", "KEYSLOT", key) == slot
                client.set(key, f"value {slot}")

            cluster.reshard(moving, third)

            for port in cluster.ports:
                owners = slot_owners(cluster, port)
                assert len(owners) == SLOTS
                for slot in range(SLOTS):
                    expected = third if slot in moving else before[slot]
                    assert owners[slot] == expected, (port, slot)
            for slot, key in keys.items():
                assert client.get(key) == f"value {slot}"  # after a MOVED
            # The keys moved with their slots, and only those.
            target = cluster.server(third)
            for slot, key in keys.items():
                count = target.query("CLUSTER", "COUNTKEYSINSLOT", slot)
                assert count == (1 if slot in moving else 0), slot
                if slot in moving:
                    assert target.client().get(key) == f"value {slot}"
            source = cluster.server(first)
            assert source.query("CLUSTER", "COUNTKEYSINSLOT", 5400) == 0
            assert source.query("CLUSTER", "COUNTKEYSINSLOT", 5399) == 1
        finally:
            client.close()


def test_sentinel_failover(tmp_path: Path) -> None:
    with sentinel_group(tmp_path) as group:
        hosts = ",".join(f"127.0.0.1:{port}" for port in group.sentinel_ports)
        assert group.url == f"redis+sentinel://{hosts}/mymaster"
        assert len(set(group.sentinel_ports)) == 3
        master = group.server(group.master_port).client()
        master.set("key", "value")
        assert master.wait(1, int(units(5) * 1000)) == 1
        assert set(group.sentinel_masters().values()) == {
            ("127.0.0.1", group.master_port)
        }

        started = time.monotonic()
        assert group.kill_master() == group.master_port
        new = group.wait_failover()
        print(f"sentinel failover in {time.monotonic() - started:.2f} s")

        assert new == group.replica_port
        assert group.current_master() == new
        promoted = group.server(new).client()
        assert promoted.execute_command("ROLE")[0] == "master"
        assert promoted.get("key") == "value"
        promoted.set("key", "written after")


def test_tls_redis(tmp_path: Path) -> None:
    with tls_redis(tmp_path) as server:
        assert server.url == f"rediss://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file)
        try:
            assert client.ping() is True
        finally:
            client.close()

        # Strict verification (Python 3.13's default) accepts the certificate.
        context = ssl.create_default_context(cafile=server.ca_file)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"PING\r\n")
            assert tls.recv(64) == b"+PONG\r\n"

        # The server resets it at once; no retries (redis-py makes 3 by default).
        plain = redis.Redis(
            "127.0.0.1",
            server.port,
            socket_timeout=units(5),
            retry=Retry(NoBackoff(), 0),
        )
        with pytest.raises(redis.ConnectionError):
            plain.ping()
        plain.close()
        # Without the CA, the server's certificate is not trusted.
        untrusted = redis.Redis.from_url(server.url, socket_timeout=units(5))
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            untrusted.ping()
        untrusted.close()
        process = server.server.process
    assert process is not None and process.returncode is not None


def test_failure_to_start_is_explained(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "broken", ["--no-such-directive", "yes"])
    with pytest.raises(RedisServerError, match="exited with code 1") as failure:
        server.start()
    assert "Bad directive or wrong number of arguments" in str(failure.value)
    assert not server.alive()
