"""wsserver.redistarget: one Redis, Sentinel or a Cluster, from a setting."""

from __future__ import annotations

import pytest

from wsserver.config import ConfigError, load_config
from wsserver.redistarget import mode_problem, parse_redis, server_mode


def test_one_server():
    target = parse_redis("rediss://user:secret@cache:6380/2")
    assert (target.mode, target.tls) == ("single", True)
    assert "secret" not in target.describe()


def test_sentinel():
    target = parse_redis("redis+sentinel://:pw@s1:26379,s2,s3:26380/mymaster/3")
    assert target.mode == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26379), ("s3", 26380))
    assert (target.service, target.db, target.password) == ("mymaster", 3, "pw")
    assert not target.tls
    assert parse_redis("rediss+sentinel://s1/m").tls
    assert target.describe() == "Sentinel s1:26379,s2:26379,s3:26380, master 'mymaster'"


def test_cluster_startup_nodes():
    target = parse_redis("redis://a:7000,b:7001,redis://c:7002", cluster=True)
    assert target.mode == "cluster"
    assert target.nodes == (("a", 7000), ("b", 7001), ("c", 7002))


@pytest.mark.parametrize(
    ("value", "cluster", "message"),
    [
        ("http://x", False, "expected a redis://"),
        ("redis://a:1,b:2", False, "set WS_REDIS_CLUSTER=true"),
        ("redis://a:1/3", True, "only database 0"),
        ("unix:///tmp/r.sock", True, "over TCP"),
        ("redis+sentinel://s1", False, "no master name"),
        ("redis+sentinel://s1/m", True, "use one"),
        ("redis://a:1,rediss://b:2", True, "every node must use redis://"),
        ("redis://a:1,b:x", True, "bad port"),
    ],
)
def test_what_is_wrong_is_said(value, cluster, message):
    with pytest.raises(ValueError, match=message):
        parse_redis(value, cluster=cluster)


def test_a_missing_ca_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        parse_redis("rediss://a", ca_file=str(tmp_path / "ca.pem"))


def test_the_mode_is_checked_against_the_server():
    assert mode_problem(False, False, "REDIS_URL", "X") is None
    assert "names a Redis Cluster node" in mode_problem(
        False, True, "REDIS_URL", "WS_REDIS_CLUSTER=true"
    )
    assert "without cluster mode" in mode_problem(
        True, False, "REDIS_URL", "WS_REDIS_CLUSTER=true"
    )
    # HELLO's answer, in RESP3 and RESP2.
    assert server_mode({b"mode": b"cluster", b"proto": 3}) == "cluster"
    assert server_mode([b"server", b"redis", b"mode", b"standalone"]) == "standalone"


def test_the_sidecars_configuration_names_the_variable():
    with pytest.raises(ConfigError) as error:
        load_config({"SECRET_KEY": "k", "REDIS_URL": "redis://a:1,b:2"})
    assert any(
        problem.startswith("REDIS_URL: several servers")
        for problem in error.value.problems
    )
    config = load_config(
        {
            "SECRET_KEY": "k",
            "WS_REDIS_URL": "redis://a:1,b:2",
            "WS_REDIS_CLUSTER": "yes",
        }
    )
    assert config.redis.mode == "cluster"
