"""Throwaway Redis servers for tests: a cluster, a Sentinel group, TLS.

Each server is a real ``redis-server`` (/usr/bin) on a free loopback port
(never 6379, always below 55000, with port + 10000 free too for a cluster
bus), in its own directory under the test's ``tmp_path``, without persistence
(``--save "" --appendonly no``), logging to ``server.log`` there. Every server
runs in its own process group, killed (SIGKILL: there is nothing to keep) when
its context manager exits, the test failed or not, and at the latest when the
Python process exits.

- ``redis_cluster(tmp_path)``: masters with replicas, ``redis-cli --cluster
  create``d, with a short node timeout so failovers take a couple of seconds;
  it can kill a master, wait for the failover, and move exactly the given slots
  (keys included) to a master. With ``tls=True``, every node speaks TLS only,
  to clients, to each other (the cluster bus) and to its replicas.
- ``sentinel_group(tmp_path)``: a master, a replica and three sentinels; kill
  the master and wait for the sentinels to promote the replica.
- ``tls_redis(tmp_path)``: a server that speaks TLS only, with a certificate
  (for 127.0.0.1 and localhost) from a CA made for it.

Timeouts are time units (waiting.py: WSSERVER_TEST_TIME_UNIT scales them). A
wait that fails raises RedisServerError with what was last seen and the tail
of the servers' logs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry
from waiting import units, wait_for

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
HOST = "127.0.0.1"
SLOTS = 16384
BUS_OFFSET = 10000  # a cluster node's bus port is its port + 10000
PORT_CEILING = 55000  # so that port + 10000 is a valid port, clear of 65535
PORT_FLOOR = 10000
START_ATTEMPTS = 5  # spawns of one server while its port turns out to be taken
LOG_TAIL_LINES = 30

T = TypeVar("T")


class RedisServerError(RuntimeError):
    """A throwaway server did not start, exited, or a wait on it timed out."""


# Free ports ------------------------------------------------------------------

_reserved: set[int] = set()
_reserved_lock = threading.Lock()


def _port_range() -> tuple[int, int]:
    """Where to look for ports: below the ephemeral range if possible.

    Ports of outgoing connections come from the ephemeral range (Linux:
    32768-60999), so a port probed free there may be taken a moment later;
    below it, with the bus port below it too, only listening servers compete.
    """
    ceiling = PORT_CEILING
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        if low - BUS_OFFSET > PORT_FLOOR + 2000:
            ceiling = min(ceiling, low - BUS_OFFSET)
    return PORT_FLOOR, ceiling


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port below 55000, free with port + 10000, never 6379.

    Reserved for this process (with its bus port) until it exits, so that two
    servers of a test never get the same one; another process may still take
    it before the server binds it: servers then start again on another port.
    """
    low, high = _port_range()
    for _ in range(1000):
        port = random.randrange(low, high)
        pair = {port, port + BUS_OFFSET}
        with _reserved_lock:
            if 6379 in pair or pair & _reserved:
                continue
            if _bindable(port) and _bindable(port + BUS_OFFSET):
                _reserved.update(pair)
                return port
    raise RedisServerError(f"no free port pair found in {low}-{high}")


# Waiting ---------------------------------------------------------------------


class _NotYet(Exception):
    """Raised by a check: the condition is not true yet, and why."""


def _log_tails(servers: Iterable[RedisServer]) -> str:
    return "".join(
        f"\n--- {server.name} (port {server.port}) log tail ---\n{server.log_tail()}"
        for server in servers
    )


def _wait(
    check: Callable[[], T],
    timeout: float,
    what: str,
    servers: Sequence[RedisServer],
) -> T:
    """Call ``check`` until it returns a true value, and return that value.

    ``check`` may raise _NotYet (or a Redis or socket error) to say not yet.
    Fails at once if one of ``servers`` (which must stay up) exits. The error
    has the last reason for not yet and the tails of the servers' logs.
    """
    last = ["not checked yet"]

    def attempt() -> T | None:
        for server in servers:
            code = server.returncode()
            if code is not None:
                raise RedisServerError(
                    f"{what}: {server.name} on port {server.port} exited with "
                    f"code {code}" + _log_tails(servers)
                )
        try:
            return check()
        except (_NotYet, redis.RedisError, OSError) as exc:
            last[0] = f"{type(exc).__name__}: {exc}"
            return None

    try:
        return wait_for(attempt, timeout, what)
    except TimeoutError as exc:
        raise RedisServerError(
            f"{exc}; last seen: {last[0]}" + _log_tails(servers)
        ) from None


def _fields(text: str) -> dict[str, str]:
    """``name:value`` lines (INFO, CLUSTER INFO) as a dict of text."""
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            fields[name] = value.strip()
    return fields


# One server ------------------------------------------------------------------

_running: set[RedisServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    with _running_lock:
        leftovers = list(_running)
    for server in leftovers:
        server.stop()


class RedisServer:
    """One ``redis-server`` process (or sentinel) on a free port.

    ``args`` are extra command-line arguments; ``config`` is the initial text
    of its configuration file (a sentinel's ``sentinel monitor`` lines; a
    server rewrites that file with CONFIG REWRITE, a sentinel on every change,
    so it always has one). ``port_option`` is ``tls-port`` for a TLS-only
    server (which gets ``--port 0``).
    """

    def __init__(
        self,
        parent: Path,
        name: str,
        args: Sequence[str] = (),
        config: str = "",
        sentinel: bool = False,
        port_option: str = "port",
        ca_file: str | None = None,
    ):
        self.parent = Path(parent)
        self.name = name
        self.args = list(args)
        self.config = config
        self.sentinel = sentinel
        self.port_option = port_option
        self.ca_file = ca_file
        self.port = 0
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._clients: dict[tuple[bool, bool], redis.Redis] = {}

    def __repr__(self) -> str:
        return f"<RedisServer {self.name} port={self.port}>"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None, "not started"
        return self.directory / "server.log"

    def command_line(self) -> list[str]:
        assert self.directory is not None
        conf = "sentinel.conf" if self.sentinel else "redis.conf"
        command = [REDIS_SERVER, str(self.directory / conf)]
        if self.sentinel:
            command.append("--sentinel")
        if self.port_option != "port":
            command += ["--port", "0"]
        command += [f"--{self.port_option}", str(self.port)]
        command += ["--bind", HOST, "--dir", str(self.directory)]
        command += ["--save", "", "--appendonly", "no"]
        # A replica's first sync starts at once, not 5 s later (the default
        # delay waits for more replicas to share the transfer).
        command += ["--repl-diskless-sync-delay", "0", *self.args]
        return command

    def spawn(self) -> None:
        """Start the process on a new free port, without waiting for it."""
        self.port = free_port()
        self.directory = self.parent / f"{self.name}-{self.port}"
        self.directory.mkdir(parents=True)
        conf = "sentinel.conf" if self.sentinel else "redis.conf"
        (self.directory / conf).write_text(self.config)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command_line(),
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed in stop()
        )
        with _running_lock:
            _running.add(self)

    def ensure_ready(self, timeout: float = 10) -> Self:
        """Wait until it answers PING; spawn it again if its port was taken."""
        for _ in range(START_ATTEMPTS):
            try:
                _wait(
                    lambda: self.client().ping(),
                    timeout,
                    f"{self.name} answering PING",
                    [self],
                )
                return self
            except RedisServerError:
                conflict = "Address already in use" in self.log()
                self.stop()
                if not conflict:
                    raise
            self.spawn()
        raise RedisServerError(
            f"{self.name}: ports taken {START_ATTEMPTS} times in a row" + self.tail()
        )

    def start(self, timeout: float = 10) -> Self:
        self.spawn()
        return self.ensure_ready(timeout)

    def returncode(self) -> int | None:
        """None while it runs (or before it started), else its exit code."""
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, decode: bool = True, raw: bool = False) -> redis.Redis:
        """A plain (not cluster) client of this server, without retries.

        ``raw``: RESP2 replies as the server sent them, parsed by no callback
        (e.g. CLUSTER NODES as text, SENTINEL MASTER as a flat list).
        """
        if (decode, raw) not in self._clients:
            tls = {"ssl": True, "ssl_ca_certs": self.ca_file} if self.ca_file else {}
            client = redis.Redis(
                HOST,
                self.port,
                decode_responses=decode,
                socket_timeout=units(3),
                socket_connect_timeout=units(2),
                retry=Retry(NoBackoff(), 0),
                protocol=2 if raw else None,
                **tls,
            )
            if raw:
                client.response_callbacks.clear()
            self._clients[decode, raw] = client
        return self._clients[decode, raw]

    def query(self, *args: str | int) -> Any:
        """A command's raw reply (see client())."""
        return self.client(raw=True).execute_command(*args)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to its process group (children included): SIGKILL
        (and wait for it to exit), or e.g. SIGSTOP and SIGCONT."""
        # Not reaped yet (a zombie at worst): the group is still its own.
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        if self.process is not None and sig == signal.SIGKILL:
            try:
                self.process.wait(units(10))
            except subprocess.TimeoutExpired:
                raise RedisServerError(
                    f"{self.name} on port {self.port} survived SIGKILL"
                ) from None

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is kept) and its children; idempotent."""
        self.kill()
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _running_lock:
            _running.discard(self)

    def log(self) -> str:
        if self.directory is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def tail(self) -> str:
        return _log_tails([self])


def _start_all(servers: Sequence[RedisServer], timeout: float = 10) -> None:
    """Spawn them all, then wait for each: they start in parallel."""
    for server in servers:
        server.spawn()
    for server in servers:
        server.ensure_ready(timeout)


class _Managed:
    """Context manager protocol: start on enter, stop on exit, even if start
    failed half-way."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# Cluster ---------------------------------------------------------------------


def key_for_slot(slot: int, prefix: str = "key") -> str:
    """A key (``prefix:N``) that hashes to ``slot``."""
    for number in range(SLOTS * 64):
        key = f"{prefix}:{number}"
        if key_slot(key.encode()) == slot:
            return key
    raise LookupError(f"no key {prefix}:N in slot {slot}")  # pragma: no cover


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES, as a node sees the cluster."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None  # of a replica
    ranges: tuple[tuple[int, int], ...]  # slots it serves (its own migrations left out)

    @classmethod
    def parse(cls, line: str) -> ClusterNode:
        fields = line.split()
        address = fields[1].split("@")[0].split(",")[0]
        ranges = []
        for token in fields[8:]:
            if token.startswith("["):  # a slot being imported or migrated
                continue
            start, _, end = token.partition("-")
            ranges.append((int(start), int(end or start)))
        return cls(
            id=fields[0],
            port=int(address.rsplit(":", 1)[1] or 0),
            flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3],
            ranges=tuple(ranges),
        )

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def state(self) -> str:
        """ok, pfail (this node thinks it is down), fail (agreed), or other."""
        for flag, state in (
            ("fail", "fail"),
            ("fail?", "pfail"),
            ("handshake", "handshake"),
            ("noaddr", "noaddr"),
        ):
            if flag in self.flags:
                return state
        return "ok"

    @property
    def slots(self) -> set[int]:
        return {slot for start, end in self.ranges for slot in range(start, end + 1)}

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.ranges)

    def key(self) -> tuple[object, ...]:
        """What all nodes must agree on ('myself' and link states aside)."""
        role = "master" if self.is_master else "replica"
        return (self.id, self.port, role, self.state, self.master_id, self.ranges)


@dataclass
class _Killed:
    slots: set[int]
    replicas: list[int]


class RedisCluster(_Managed):
    """A Redis Cluster of ``masters`` masters with ``replicas_per_master``
    replicas each, on loopback; a context manager (see redis_cluster()).

    ``ports`` lists all nodes in the order they were started; redis-cli made
    the first ``masters`` of them masters. ``timeout`` arguments are time
    units. ``tls``: every node listens with TLS only (``--port 0``), its
    cluster bus and replication too, with a certificate from a CA made for
    the cluster (``ca_file``); clients need not present one.
    """

    def __init__(
        self,
        tmp_path: Path,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = 1000,
        args: Sequence[str] = (),
        tls: bool = False,
    ):
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.directory = Path(tmp_path)
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.certificates = (
            make_certificates(self.directory / "tls-certificates") if tls else None
        )
        tls_args = []
        if self.certificates is not None:
            tls_args = [
                *_tls_args(self.certificates),
                *("--tls-cluster", "yes", "--tls-replication", "yes"),
            ]
        node_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # A replica fails over however long ago it heard from its master.
            "--cluster-replica-validity-factor",
            "0",
            *tls_args,
            *args,
        ]
        self.servers = [
            RedisServer(
                self.directory,
                "cluster-node",
                node_args,
                port_option="tls-port" if tls else "port",
                ca_file=self.ca_file,
            )
            for _ in range(masters * (1 + replicas_per_master))
        ]
        self._by_port: dict[int, RedisServer] = {}
        self._ids: dict[int, str] = {}
        self._killed: dict[int, _Killed] = {}

    # Lifecycle

    def start(self, timeout: float = 30) -> Self:
        _start_all(self.servers)
        self._by_port = {server.port: server for server in self.servers}
        command = [
            REDIS_CLI,
            "--cluster",
            "create",
            *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas",
            str(self.replicas_per_master),
            "--cluster-yes",
        ]
        if self.ca_file is not None:
            command += ["--tls", "--cacert", self.ca_file]
        try:
            create = subprocess.run(
                command, capture_output=True, text=True, timeout=units(60)
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisServerError(
                f"redis-cli --cluster create: no result after {exc.timeout:g} s"
                + _log_tails(self.servers)
            ) from None
        if create.returncode != 0 or "All 16384 slots covered" not in create.stdout:
            raise RedisServerError(
                f"redis-cli --cluster create failed ({create.returncode}):\n"
                f"{create.stdout}{create.stderr}" + _log_tails(self.servers)
            )
        self._ids = {
            port: self.server(port).query("CLUSTER", "MYID") for port in self.ports
        }
        self.wait_stable(timeout)
        masters = self.masters()
        if masters != self.ports[: self.master_count] or any(
            len(self.replicas_of(port)) != self.replicas_per_master for port in masters
        ):
            raise RedisServerError(
                f"redis-cli made masters {masters} of nodes {self.ports}, with "
                f"replicas {[self.replicas_of(port) for port in masters]}"
            )
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    # Addresses

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def ca_file(self) -> str | None:
        """The CA of a TLS cluster's certificates (None without TLS)."""
        return None if self.certificates is None else self.certificates.ca_file

    @property
    def scheme(self) -> str:
        return "redis" if self.certificates is None else "rediss"

    @property
    def url(self) -> str:
        """The first node's URL (a master, until it is killed)."""
        return f"{self.scheme}://{HOST}:{self.ports[0]}"

    @property
    def urls_csv(self) -> str:
        """The URLs of the masters now, comma-separated."""
        return ",".join(f"{self.scheme}://{HOST}:{port}" for port in self.masters())

    def server(self, port: int) -> RedisServer:
        try:
            return self._by_port[port]
        except KeyError:
            raise ValueError(f"no node of this cluster on port {port}") from None

    def client(self, port: int) -> redis.Redis:
        """A plain client of one node (it answers MOVED for others' slots)."""
        return self.server(port).client()

    def node_id(self, port: int) -> str:
        return self._ids[port]

    def node_log(self, port: int) -> str:
        return self.server(port).log()

    def live_ports(self) -> list[int]:
        return [server.port for server in self.servers if server.alive()]

    def _live_servers(self) -> list[RedisServer]:
        return [server for server in self.servers if server.port not in self._killed]

    # Topology

    def nodes(self, port: int | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as node ``port`` (default: the first live one) sees it."""
        if port is None:
            live = self.live_ports()
            if not live:
                raise RedisServerError("no node of the cluster is running")
            port = live[0]
        text = self.server(port).query("CLUSTER", "NODES")
        return [ClusterNode.parse(line) for line in text.splitlines() if line.strip()]

    def masters(self) -> list[int]:
        """Ports of the running masters (with slots or not), in start order."""
        live = set(self.live_ports())
        masters = {
            node.port
            for node in self.nodes()
            if node.is_master and node.state != "fail" and node.port in live
        }
        return [port for port in self.ports if port in masters]

    def replicas_of(self, port: int) -> list[int]:
        master_id = self.node_id(port)
        return [node.port for node in self.nodes() if node.master_id == master_id]

    def master_for_slot(self, slot: int) -> int:
        for node in self.nodes():
            if node.is_master and node.state != "fail" and node.serves(slot):
                return node.port
        raise LookupError(f"no master serves slot {slot}")

    def slots_of(self, port: int) -> set[int]:
        for node in self.nodes():
            if node.port == port:
                return node.slots
        raise ValueError(f"no node on port {port} in CLUSTER NODES")

    def cluster_info(self, port: int) -> dict[str, str]:
        return _fields(self.server(port).query("CLUSTER", "INFO"))

    def _stable_view(self) -> list[ClusterNode]:
        """The nodes, if every running node is ok and sees the same cluster:
        running nodes ok, killed ones failed, all slots served, replicas
        synced."""
        live = self.live_ports()
        views: dict[int, list[ClusterNode]] = {}
        for port in live:
            state = self.cluster_info(port).get("cluster_state")
            if state != "ok":
                raise _NotYet(f"node {port}: cluster_state:{state}")
            views[port] = self.nodes(port)
        first = sorted(node.key() for node in views[live[0]])
        for port, view in views.items():
            other = sorted(node.key() for node in view)
            if other != first:
                differ = set(first) ^ set(other)
                raise _NotYet(f"nodes {live[0]} and {port} disagree on {differ}")
        view = views[live[0]]
        known = {node.port for node in view}
        if known != set(self.ports):
            raise _NotYet(f"nodes known: {sorted(known)}, started: {self.ports}")
        served = 0
        for node in view:
            expected = "fail" if node.port in self._killed else "ok"
            if node.state != expected:
                raise _NotYet(f"node {node.port} is {node.state}, not {expected}")
            if node.is_master and node.state == "ok":
                served += len(node.slots)
            if not node.is_master and node.state == "ok":
                link = _fields(self.server(node.port).query("INFO", "replication"))
                if link.get("master_link_status") != "up":
                    raise _NotYet(f"replica {node.port}: link to master not up")
        if served != SLOTS:
            raise _NotYet(f"{served} slots served, not {SLOTS}")
        return view

    def wait_stable(self, timeout: float = 20) -> list[ClusterNode]:
        """Wait until every running node has cluster_state:ok and all agree."""
        return _wait(
            self._stable_view,
            timeout,
            "cluster ok and agreed on every node",
            self._live_servers(),
        )

    # Failover

    def kill_master(self, port: int) -> None:
        """SIGKILL master ``port`` (see wait_failover)."""
        if port not in self.masters():
            raise ValueError(f"node {port} is not a running master")
        view = self.nodes(next(p for p in self.live_ports() if p != port))
        master = next(node for node in view if node.port == port)
        replicas = [node.port for node in view if node.master_id == master.id]
        self._killed[port] = _Killed(master.slots, replicas)
        self.server(port).kill()

    def wait_failover(self, port: int, timeout: float = 15) -> int:
        """Wait until a replica of killed master ``port`` serves its slots
        and the cluster is ok and agreed on the survivors; return its port."""
        killed = self._killed.get(port)
        if killed is None:
            raise ValueError(f"node {port} was not killed with kill_master()")
        if not killed.replicas:
            raise RedisServerError(f"master {port} had no replica to promote")

        def promoted() -> int:
            view = self._stable_view()
            for node in view:
                if node.port in killed.replicas and node.is_master:
                    if not killed.slots <= node.slots:
                        raise _NotYet(f"{node.port} promoted, not all slots yet")
                    role = self.server(node.port).query("ROLE")
                    if role[0] != "master":
                        raise _NotYet(f"{node.port} answers ROLE {role[0]}")
                    return node.port
            raise _NotYet(f"no replica of {port} ({killed.replicas}) promoted")

        return _wait(
            promoted,
            timeout,
            f"failover of master {port}",
            self._live_servers(),
        )

    # Resharding

    def reshard(self, slots: Iterable[int], to_port: int, timeout: float = 30) -> None:
        """Move exactly ``slots`` (and their keys) to master ``to_port``.

        Slot by slot: IMPORTING on the destination, MIGRATING on the source,
        MIGRATE of the keys, then SETSLOT NODE on the destination, the source
        and the other masters; then wait until every node agrees.
        """
        wanted = sorted(set(slots))
        if any(not 0 <= slot < SLOTS for slot in wanted):
            raise ValueError(f"slots must be in 0-{SLOTS - 1}")
        if to_port not in self.masters():
            raise ValueError(f"node {to_port} is not a running master")
        view = self.nodes(to_port)
        owners: dict[int, list[int]] = {}
        for slot in wanted:
            owner = next((n.port for n in view if n.is_master and n.serves(slot)), None)
            if owner is None:
                raise RedisServerError(f"slot {slot} has no owner to move it from")
            if owner != to_port:
                owners.setdefault(owner, []).append(slot)
        target = self.server(to_port)
        target_id = self.node_id(to_port)
        masters = self.masters()
        for source_port, moving in owners.items():
            source = self.server(source_port)
            self._setslots(target, moving, "IMPORTING", self.node_id(source_port))
            self._setslots(source, moving, "MIGRATING", target_id)
            for slot in moving:
                self._migrate_keys(source, to_port, slot)
            self._setslots(target, moving, "NODE", target_id)
            self._setslots(source, moving, "NODE", target_id)
            for port in masters:
                if port not in (to_port, source_port):
                    self._setslots(self.server(port), moving, "NODE", target_id)

        def moved() -> bool:
            view = self._stable_view()
            owner = next(node for node in view if node.port == to_port)
            missing = set(wanted) - owner.slots
            if missing:
                raise _NotYet(f"{len(missing)} slots not on {to_port} yet")
            return True

        _wait(moved, timeout, f"slots moved to {to_port}", self._live_servers())

    @staticmethod
    def _setslots(
        server: RedisServer, slots: list[int], subcommand: str, node_id: str
    ) -> None:
        pipe = server.client(raw=True).pipeline(transaction=False)
        for slot in slots:
            pipe.execute_command("CLUSTER", "SETSLOT", slot, subcommand, node_id)
        pipe.execute()

    @staticmethod
    def _migrate_keys(source: RedisServer, to_port: int, slot: int) -> None:
        client = source.client(decode=False, raw=True)
        while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            client.execute_command(
                "MIGRATE",
                HOST,
                to_port,
                "",
                0,
                int(units(10) * 1000),
                "REPLACE",
                "KEYS",
                *keys,
            )


@contextlib.contextmanager
def redis_cluster(
    tmp_path: Path,
    masters: int = 3,
    replicas_per_master: int = 1,
    node_timeout_ms: int = 1000,
    args: Sequence[str] = (),
    tls: bool = False,
) -> Iterator[RedisCluster]:
    """A running cluster, killed on exit; ``args`` go to every node."""
    with RedisCluster(
        tmp_path, masters, replicas_per_master, node_timeout_ms, args, tls
    ) as cluster:
        yield cluster


# Sentinel --------------------------------------------------------------------


def _pairs(reply: list[str]) -> dict[str, str]:
    """A flat [key, value, key, value...] reply as a dict."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


class SentinelGroup(_Managed):
    """A master, one replica of it and ``sentinels`` sentinels watching it
    as ``name``; a context manager (see sentinel_group()).

    ``master_port`` and ``replica_port`` are the roles at start;
    current_master() and wait_failover() tell which serves now.
    """

    def __init__(
        self,
        tmp_path: Path,
        name: str = "mymaster",
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ):
        self.directory = Path(tmp_path)
        self.name = name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = RedisServer(self.directory, "sentinel-master")
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisServer] = []
        self.sentinel_count = sentinels
        self._current: RedisServer = self.master
        self._killed: RedisServer | None = None

    def start(self, timeout: float = 20) -> Self:
        self.master.start()
        self.replica = RedisServer(
            self.directory,
            "sentinel-replica",
            ["--replicaof", HOST, str(self.master.port)],
        ).start()
        config = (
            f"sentinel monitor {self.name} {HOST} {self.master.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        self.sentinels = [
            RedisServer(self.directory, "sentinel", config=config, sentinel=True)
            for _ in range(self.sentinel_count)
        ]
        _start_all(self.sentinels)
        _wait(
            self._watching,
            timeout,
            f"sentinels watching {self.name} with its replica and each other",
            self._servers(),
        )
        return self

    def _watching(self) -> bool:
        link = _fields(self.replica_server.query("INFO", "replication"))
        if link.get("master_link_status") != "up":
            raise _NotYet("replica not synced with the master")
        for sentinel in self.sentinels:
            master = _pairs(sentinel.query("SENTINEL", "MASTER", self.name))
            others = int(master["num-other-sentinels"])
            if master["flags"] != "master" or others != len(self.sentinels) - 1:
                raise _NotYet(
                    f"sentinel {sentinel.port}: flags {master['flags']}, "
                    f"{others} other sentinels"
                )
            replicas = sentinel.query("SENTINEL", "REPLICAS", self.name)
            states = [_pairs(replica) for replica in replicas]
            if not any(
                int(r["port"]) == self.replica_port
                and r["flags"] == "slave"
                and r.get("master-link-status") == "ok"
                for r in states
            ):
                raise _NotYet(f"sentinel {sentinel.port} does not know the replica")
        return True

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            if server is not None:
                server.stop()

    def _servers(self) -> list[RedisServer]:
        servers = [self.master, self.replica, *self.sentinels]
        return [s for s in servers if s is not None and s is not self._killed]

    @property
    def replica_server(self) -> RedisServer:
        assert self.replica is not None, "not started"
        return self.replica

    @property
    def master_port(self) -> int:
        return self.master.port

    @property
    def replica_port(self) -> int:
        return self.replica_server.port

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.name}"

    def server(self, port: int) -> RedisServer:
        for server in [self.master, self.replica, *self.sentinels]:
            if server is not None and server.port == port:
                return server
        raise ValueError(f"no server of this group on port {port}")

    def log(self, port: int) -> str:
        return self.server(port).log()

    def sentinel_masters(self) -> dict[int, tuple[str, int] | None]:
        """What each running sentinel says the master's address is."""
        addresses: dict[int, tuple[str, int] | None] = {}
        for sentinel in self.sentinels:
            if sentinel.alive():
                reply = sentinel.query("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                addresses[sentinel.port] = (reply[0], int(reply[1])) if reply else None
        return addresses

    def current_master(self) -> int:
        """The master's port as the servers know it (not the sentinels)."""
        return self._current.port

    def kill_master(self) -> int:
        """SIGKILL the current master; return its port (see wait_failover)."""
        self._killed = self._current
        self._current.kill()
        return self._killed.port

    def wait_failover(self, timeout: float = 20) -> int:
        """Wait until every sentinel names another master than the killed
        one, and that one answers ROLE as master; return its port."""
        if self._killed is None:
            raise ValueError("no master was killed with kill_master()")
        killed = self._killed.port

        def new_master() -> int:
            addresses = self.sentinel_masters()
            named = set(addresses.values())
            if len(named) != 1:
                raise _NotYet(f"sentinels disagree: {addresses}")
            address = named.pop()
            if address is None or address[1] == killed:
                raise _NotYet(f"sentinels still name {address}")
            role = self.server(address[1]).query("ROLE")
            if role[0] != "master":
                raise _NotYet(f"{address[1]} answers ROLE {role[0]}")
            return address[1]

        port = _wait(
            new_master, timeout, f"sentinels failing over {killed}", self._servers()
        )
        self._current = self.server(port)
        return port


@contextlib.contextmanager
def sentinel_group(tmp_path: Path, name: str = "mymaster") -> Iterator[SentinelGroup]:
    """A running master, replica and three sentinels, killed on exit."""
    with SentinelGroup(tmp_path, name) as group:
        yield group


# TLS -------------------------------------------------------------------------


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=units(30),
    )
    if result.returncode != 0:
        raise RedisServerError(
            f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        )


@dataclass(frozen=True)
class Certificates:
    ca_file: str
    ca_key: str
    cert_file: str
    key_file: str


def make_certificates(directory: Path) -> Certificates:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost.

    With the extensions strict verification wants (Python 3.13's default
    VERIFY_X509_STRICT): key usages, subject and authority key identifiers.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.ext").write_text(
        "basicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    (directory / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        # A cluster node presents it to the others too, as a client.
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    _openssl(directory, "genrsa", "-out", "ca.key", "2048")
    _openssl(
        directory, "req", "-new", "-key", "ca.key", "-subj", "/CN=Test CA",
        "-out", "ca.csr",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key",
        "-days", "2", "-sha256", "-extfile", "ca.ext", "-out", "ca.crt",
    )  # fmt: skip
    _openssl(directory, "genrsa", "-out", "server.key", "2048")
    _openssl(
        directory, "req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1",
        "-out", "server.csr",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt",
        "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-sha256",
        "-extfile", "server.ext", "-out", "server.crt",
    )  # fmt: skip
    return Certificates(
        ca_file=str(directory / "ca.crt"),
        ca_key=str(directory / "ca.key"),
        cert_file=str(directory / "server.crt"),
        key_file=str(directory / "server.key"),
    )


def _tls_args(certificates: Certificates) -> list[str]:
    """A server's TLS options (with ``--port 0 --tls-port N``, see
    RedisServer's ``port_option``): clients need not present a certificate."""
    return [
        "--tls-cert-file",
        certificates.cert_file,
        "--tls-key-file",
        certificates.key_file,
        "--tls-ca-cert-file",
        certificates.ca_file,
        "--tls-auth-clients",
        "no",
    ]


class TLSRedis(_Managed):
    """A Redis that listens with TLS only (``--port 0``); clients need not
    present a certificate. A context manager (see tls_redis())."""

    def __init__(self, tmp_path: Path):
        self.directory = Path(tmp_path)
        self.certificates: Certificates | None = None
        self.server: RedisServer | None = None

    def start(self, timeout: float = 10) -> Self:
        certificates = make_certificates(self.directory / "tls-certificates")
        self.certificates = certificates
        self.server = RedisServer(
            self.directory,
            "tls-redis",
            _tls_args(certificates),
            port_option="tls-port",
            ca_file=certificates.ca_file,
        ).start(timeout)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    @property
    def url(self) -> str:
        return f"rediss://{HOST}:{self.port}/0"

    @property
    def ca_file(self) -> str:
        assert self.certificates is not None, "not started"
        return self.certificates.ca_file

    def log(self) -> str:
        return "" if self.server is None else self.server.log()


@contextlib.contextmanager
def tls_redis(tmp_path: Path) -> Iterator[TLSRedis]:
    """A running TLS-only Redis, killed on exit."""
    with TLSRedis(tmp_path) as server:
        yield server
