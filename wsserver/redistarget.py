"""Which Redis to use, and how to connect: one server, Sentinel, or a Cluster.

Django-free: the sidecar (``REDIS_URL`` / ``WS_REDIS_URL``,
``WS_REDIS_CLUSTER``, ``WS_REDIS_CA_FILE``) and the publisher app
(``WSSERVER_REDIS_URL``, ``WSSERVER_REDIS_CLUSTER``,
``WSSERVER_REDIS_CA_FILE``) read their settings with :func:`parse_redis` and
make their clients with it, so both sides always agree:

- one server: ``redis://host:port/db``, ``rediss://`` for TLS, ``unix://``;
- Sentinel: ``redis+sentinel://sentinel1:26379,sentinel2:26379/service/db``
  (``rediss+sentinel://`` for TLS to the sentinels and the master); the
  URL's user and password are the master's;
- a Redis Cluster (``cluster=True``): ``redis://node:port`` naming any node,
  more startup nodes comma-separated (``redis://a:7000,b:7000``).

``ca_file`` is the PEM file of the certificate authorities that TLS
connections trust (default: the system's).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from typing import Any

from .logs import mask_url

__all__ = ["RedisTarget", "mode_problem", "parse_redis", "server_mode"]

SCHEMES = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis setting."""

    mode: str  # "single", "sentinel" or "cluster"
    url: str = dataclasses.field(repr=False)  # as given
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or startup nodes
    service: str = ""  # Sentinel's master name
    db: int = 0
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None

    @property
    def first_url(self) -> str:
        """A URL of one server (for messages and for the single mode)."""
        return self.url.split(",", 1)[0]

    def describe(self) -> str:
        """What the target is, with no secret, for logs."""
        if self.mode == "single":
            return mask_url(self.url)
        nodes = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.mode == "sentinel":
            return f"Sentinel {nodes}, master {self.service!r}"
        return f"Redis Cluster {nodes}"

    def tls_options(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl": True}
        if self.ca_file:
            options["ssl_ca_certs"] = self.ca_file
        return options

    def async_client(self, **options: Any) -> Any:
        """An asyncio client (redis.asyncio): the master's for Sentinel, a
        RedisCluster for a Cluster."""
        from redis import asyncio as aioredis
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.sentinel import Sentinel

        if self.mode == "single":
            return aioredis.Redis.from_url(self.url, **self._url_tls(), **options)
        if self.mode == "sentinel":
            return Sentinel(
                list(self.nodes), sentinel_kwargs=self._sentinel_options(options)
            ).master_for(self.service, **self._credentials(), **options)
        options.pop("health_check_interval", None)
        options.pop("retry", None)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            **self._credentials(db=False),
            **options,
        )

    def sync_client(self, **options: Any) -> Any:
        """The same, with redis-py's blocking clients (the publisher app)."""
        import redis
        from redis.cluster import ClusterNode, RedisCluster
        from redis.sentinel import Sentinel

        if self.mode == "single":
            return redis.Redis.from_url(self.url, **self._url_tls(), **options)
        if self.mode == "sentinel":
            return Sentinel(
                list(self.nodes), sentinel_kwargs=self._sentinel_options(options)
            ).master_for(self.service, **self._credentials(), **options)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            **self._credentials(db=False),
            **options,
        )

    def _url_tls(self) -> dict[str, Any]:
        # The URL's scheme turns TLS on; only the CA file is added.
        return {"ssl_ca_certs": self.ca_file} if self.tls and self.ca_file else {}

    def _credentials(self, db: bool = True) -> dict[str, Any]:
        options: dict[str, Any] = dict(self.tls_options())
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if db and self.db:
            options["db"] = self.db
        return options

    def _sentinel_options(self, options: dict[str, Any]) -> dict[str, Any]:
        sentinel = {
            key: options[key]
            for key in ("socket_timeout", "socket_connect_timeout")
            if key in options
        }
        sentinel.update(self.tls_options())
        return sentinel


def parse_redis(
    value: str,
    *,
    cluster: bool = False,
    ca_file: str | None = None,
    cluster_setting: str = "WS_REDIS_CLUSTER=true",
) -> RedisTarget:
    """Parse a Redis setting; raise ValueError saying what is wrong
    (``cluster_setting``: how to turn the cluster mode on, for messages)."""
    if ca_file and not os.path.isfile(ca_file):
        raise ValueError(f"the CA file {ca_file!r} does not exist")
    items = [item.strip() for item in value.split(",")]
    if not items[0]:
        raise ValueError("empty")
    first = urllib.parse.urlsplit(items[0])
    scheme = first.scheme
    if scheme not in SCHEMES:
        raise ValueError(
            "expected a redis://, rediss://, unix:// or redis+sentinel:// URL, "
            f"got {mask_url(value)!r}"
        )
    username = urllib.parse.unquote(first.username) if first.username else None
    password = urllib.parse.unquote(first.password) if first.password else None
    tls = scheme.startswith("rediss")
    if scheme.endswith("+sentinel"):
        if cluster:
            raise ValueError(
                "a Sentinel URL names no cluster: Sentinel and Redis Cluster "
                "are two ways to fail over, use one"
            )
        return _sentinel(value, items, first, username, password, tls, ca_file)
    if not cluster:
        if len(items) > 1:
            raise ValueError(
                "several servers are listed: that is for a Redis Cluster "
                f"(set {cluster_setting}) or Sentinel (redis+sentinel://)"
            )
        return RedisTarget("single", value, tls=tls, ca_file=ca_file, username=username)
    if scheme == "unix":
        raise ValueError("a Redis Cluster is reached over TCP, not unix://")
    nodes = []
    for item in items:
        parts = urllib.parse.urlsplit(item if "://" in item else f"{scheme}://{item}")
        if parts.scheme != scheme:
            raise ValueError(f"every node must use {scheme}://, got {item!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {mask_url(item)!r}")
        nodes.append((parts.hostname, _port(parts, item) or 6379))
    db = first.path.strip("/")
    if db not in {"", "0"}:
        raise ValueError(
            f"a Redis Cluster has only database 0, got /{db} in {mask_url(value)!r}"
        )
    return RedisTarget(
        "cluster",
        value,
        tuple(nodes),
        username=username,
        password=password,
        tls=tls,
        ca_file=ca_file,
    )


def _port(parts: urllib.parse.SplitResult, value: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise ValueError(f"bad port in {mask_url(value)!r}") from None


def _sentinel(
    value: str,
    items: list[str],
    first: urllib.parse.SplitResult,
    username: str | None,
    password: str | None,
    tls: bool,
    ca_file: str | None,
) -> RedisTarget:
    # netloc holds the first host; the others follow, comma-separated, and
    # the last one carries the path.
    hosts = [first.netloc.rpartition("@")[2], *items[1:]]
    path = ""
    last_host, slash, rest = hosts[-1].partition("/")
    if slash:
        hosts[-1] = last_host
        path = rest
    elif len(items) == 1:
        path = first.path.lstrip("/")
    path = path.split("?", 1)[0]
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(
            "no master name: expected redis+sentinel://host:26379,.../<name>[/db]"
        )
    if db and not db.isdigit():
        raise ValueError(f"bad database {db!r} in {mask_url(value)!r}")
    nodes = []
    for host in hosts:
        name, colon, port = host.rpartition(":")
        if not colon:
            name, port = host, "26379"
        if not name or not port.isdigit():
            raise ValueError(f"bad sentinel address {host!r}")
        nodes.append((name.strip("[]"), int(port)))
    return RedisTarget(
        "sentinel",
        value,
        tuple(nodes),
        service=service,
        db=int(db or 0),
        username=username,
        password=password,
        tls=tls,
        ca_file=ca_file,
    )


def server_mode(hello: Any) -> str:
    """The server's mode from its answer to ``HELLO`` (which every ACL user
    may send): "standalone", "cluster" or "sentinel"."""
    if isinstance(hello, list):  # RESP2: key, value, key, value...
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    mode = hello.get(b"mode", hello.get("mode", b"standalone"))
    return mode.decode() if isinstance(mode, bytes) else str(mode)


def mode_problem(
    cluster: bool, server_is_cluster: bool, url_setting: str, cluster_setting: str
) -> str | None:
    """What is wrong when the server ``url_setting`` names is (or is not) a
    cluster node (None: nothing)."""
    if server_is_cluster and not cluster:
        return (
            f"{url_setting} names a Redis Cluster node: set {cluster_setting} "
            "(the sidecar's WS_REDIS_CLUSTER=true and the main site's "
            "WSSERVER_REDIS_CLUSTER = True)"
        )
    if cluster and not server_is_cluster:
        return (
            f"{cluster_setting} is set, but {url_setting} names a Redis without "
            "cluster mode: unset it, or name a node of the cluster"
        )
    return None
