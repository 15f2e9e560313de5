"""``python -m bench``: wsserver against the guide's approach, the floor and Nchan.

Creates users in a throwaway PostgreSQL database (the example site's schema),
then for each server (the baseline of bench/baseline.py, wsserver, the floor
of bench/floor.py, and Nchan, a pub/sub server in C for nginx) runs the same
load from separate client processes: connect every client, let them idle
(measuring what idle connections cost), publish events at a light rate, then
at a steady rate, publish a burst, then drop every client and reconnect them
all at once. Between the burst and the reconnection, wsserver and the floor
also get events with an audience (wsserver.audience): group and permission
events for 30% of the users, then personal events, each for one user, at
thousands a second and then all at once. Prints the tables and writes them
to bench/results/latest.md. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "WSSERVER_TEST_PG_URL",
    "postgresql://wsserver_test:wsserver_test@127.0.0.1:5432/postgres",
)
REDIS_URL = "redis://127.0.0.1:6379/14"
SECRET_KEY = "bench-secret-key-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def family(pid: int) -> list[int]:
    """A process and its children (WS_WORKERS)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return (
        [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    )


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its children (workers)."""
    user = system = 0.0
    for each in family(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
    return user, system


def machine_ticks() -> tuple[int, int]:
    """CPU time the hypervisor gave other guests, and all CPU time (/proc/stat).

    On a shared virtual machine, "steal" is time this machine's CPUs were
    ready to run but did not: it slows everything measured, so it is reported.
    """
    fields = [
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    return fields[7], sum(fields[:8])


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    return sum(
        int(Path(f"/proc/{each}/statm").read_text().split()[1]) * PAGE
        for each in family(pid)
    )


def free_ports(count: int) -> list[int]:
    """``count`` consecutive free ports, below the range of ephemeral ports."""
    for _ in range(100):
        base = random.randrange(20_000, 32_000)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + count))
    raise RuntimeError(f"no {count} consecutive free ports")


def pin(cpus: set[int] | None):
    """A preexec_fn that keeps a child process on ``cpus`` (None: anywhere)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class Database:
    def __init__(self) -> None:
        self.name = f"wsserver_bench_{uuid.uuid4().hex[:8]}"
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> Database:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


NGINX = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
NCHAN_PACKAGES = ["nginx", "libnginx-mod-nchan"]

# Nchan as the issue measured it (Debian's module, defaults), with a keepalive
# ping every 20 s like wsserver's and the floor's (Nchan's default is none).
# One worker process, as each other server is one process on one CPU.
NCHAN_CONF = """\
load_module {module};
{user}
worker_processes 1;
worker_rlimit_nofile 65536;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_websocket_ping_interval 20;
        }}
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
        }}
        location = /count {{ nchan_stub_status; }}
    }}
}}
"""


def nchan_available() -> str | None:
    """None if Nchan can run here, installing it if missing; else why not."""
    if os.path.exists(NGINX) and os.path.exists(NCHAN_MODULE):
        return None
    missing = " and ".join(NCHAN_PACKAGES)
    if os.geteuid() == 0:
        command = []
    elif shutil.which("sudo"):
        command = ["sudo", "-n"]
    else:
        return f"{missing} are not installed, and installing them needs root"
    log(f"== nchan: installing Debian's {missing}")
    had_nginx = os.path.exists(NGINX)
    apt = [*command, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    try:
        subprocess.run([*apt, "update", "-qq"], check=True, timeout=300)
        subprocess.run(
            [*apt, "install", "-y", "-qq", *NCHAN_PACKAGES],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"installing {missing} failed ({error})"
    if not had_nginx:
        # The package may have started its default site: stop it, as
        # scripts/services.sh does.
        subprocess.run(
            [*command, "sh", "-c", "[ -s /run/nginx.pid ] && nginx -s quit"],
            check=False,
            capture_output=True,
        )
    if not (os.path.exists(NGINX) and os.path.exists(NCHAN_MODULE)):
        return f"{NGINX} or {NCHAN_MODULE} missing after installing {missing}"
    return None


# -P: the wsserver the server imports is the one on PYTHONPATH if it is set
# (a patched copy: PYTHONPATH=/tmp/patched python -m bench), this checkout's
# otherwise; without it, the current directory would come first.
WSSERVER = [sys.executable, "-P"]


def wsserver_env(env: dict) -> dict:
    """``env`` with this checkout after whatever PYTHONPATH holds already."""
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)])}


def wsserver_source(env: dict) -> str:
    """The file of the wsserver package that the server imports with ``env``."""
    return subprocess.run(
        [*WSSERVER, "-c", "import wsserver; print(wsserver.__file__)"],
        env=wsserver_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


class Server:
    """One server under test, in its own process."""

    def __init__(
        self,
        kind: str,
        env: dict,
        plan_path: str,
        channel: str,
        cpus: set[int] | None,
        workers: int = 1,
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.channel = channel
        # Each worker serves its metrics on its own port (never on WS_PORT).
        self.metrics_ports = free_ports(workers) if kind == "wsserver" else []
        self.directory = None
        self.source = None
        python = sys.executable
        if kind == "wsserver":
            command = [*WSSERVER, "-m", "wsserver"]
            env = {
                **wsserver_env(env),
                "WS_HOST": "127.0.0.1",
                "WS_PORT": str(self.port),
                "WS_CHANNEL": channel,
                "WS_LOG_LEVEL": "WARNING",
                "WS_MAX_CONNECTIONS_PER_USER": "10",
                "WS_MAX_CONNECTIONS": "50000",
                "WS_ALLOWED_ORIGINS": "http://bench.invalid",
                "WS_WORKERS": str(workers),
                "WS_METRICS_PORT": str(self.metrics_ports[0]),
                # Every client comes from loopback, all at once in the
                # reconnection storm: the limits on connections still
                # authenticating would throttle what is measured.
                "WS_MAX_AUTHENTICATING": "100%",
                "WS_MAX_AUTHENTICATING_PER_ADDRESS": "0",
            }
        elif kind == "baseline":
            command = [python, "bench/baseline.py", str(self.port), channel]
            env = {**env, "DJANGO_SETTINGS_MODULE": "settings_auth"}
        elif kind == "nchan":
            self.directory = tempfile.mkdtemp(prefix="bench-nchan-")
            conf = os.path.join(self.directory, "nginx.conf")
            Path(conf).write_text(
                NCHAN_CONF.format(
                    module=NCHAN_MODULE,
                    directory=self.directory,
                    port=self.port,
                    user="user root;" if os.geteuid() == 0 else "",
                )
            )
            error_log = os.path.join(self.directory, "error.log")
            command = [NGINX, "-p", self.directory, "-c", conf, "-e", error_log]
            command += ["-g", "daemon off;"]
            self.http = None
        else:
            command = [python, "bench/floor.py", str(self.port), REDIS_URL, channel]
            command.append(plan_path)
        if kind == "wsserver":
            self.source = wsserver_source(env)
            log(f"   wsserver: importing {self.source}")
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, preexec_fn=pin(cpus)
        )
        self.wait(lambda: self.count() is not None, 30, "start")

    def paths(self, plan: list[dict]) -> list[str] | None:
        """Each client's path: Nchan's a channel per content type."""
        if self.kind != "nchan":
            return None
        return [f"/sub/ct{entry['content_type_id']}" for entry in plan]

    def publish(self, bus, payloads: list[tuple[int, str]], pipelined: bool) -> None:
        """Publish events: to Redis, or to Nchan's publisher over HTTP."""
        if self.kind == "nchan":
            if self.http is None:
                self.http = http.client.HTTPConnection("127.0.0.1", self.port)
            for content_type_id, payload in payloads:
                self.http.request(
                    "POST",
                    f"/pub/ct{content_type_id}",
                    body=payload.encode(),
                    headers={"Content-Type": "application/json"},
                )
                response = self.http.getresponse()
                response.read()
                if response.status >= 300:
                    raise RuntimeError(f"nchan: publishing got {response.status}")
        elif pipelined:
            with bus.pipeline(transaction=False) as pipeline:
                for _, payload in payloads:
                    pipeline.publish(self.channel, payload)
                pipeline.execute()
        else:
            for _, payload in payloads:
                bus.publish(self.channel, payload)

    def count(self) -> int | None:
        if self.kind == "wsserver":
            try:
                value = self.metric("wsserver_connections")
            except OSError:
                return None
            return None if value is None else int(value)
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/count", timeout=5
            ) as response:
                text = response.read().decode()
        except OSError:
            return None
        if self.kind == "nchan":  # nchan_stub_status
            for line in text.splitlines():
                if line.startswith("subscribers:"):
                    return int(line.split(":")[1])
            return None
        return int(text)

    def metric(self, name: str) -> float | None:
        """A wsserver metric, summed over its workers."""
        if self.kind != "wsserver":
            return None
        total = None
        for port in self.metrics_ports:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith(name + " "):
                        total = (total or 0.0) + float(line.split()[1])
        return total

    def wait(self, predicate, timeout: float, what: str) -> float:
        started = time.perf_counter()
        while not predicate():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited during {what}")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{self.kind}: {what} took over {timeout} s")
            time.sleep(0.02)
        return time.perf_counter() - started

    def stop(self) -> None:
        processes = family(self.process.pid)
        if self.kind == "nchan":
            if self.http is not None:
                self.http.close()
            processes = processes[:1]  # nginx's master stops its worker
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            log(f"   {self.kind}: did not stop within 30 s: killed")
            self.process.kill()
            self.process.wait()
        for pid in processes[1:]:  # workers must not outlive the benchmark
            with contextlib.suppress(OSError):
                if (
                    Path(f"/proc/{pid}/environ")
                    .read_bytes()
                    .find(f"WS_CHANNEL={self.channel}".encode())
                    >= 0
                ):
                    os.kill(pid, signal.SIGKILL)
                    log(f"   {self.kind}: worker {pid} outlived its parent: killed")
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


class Clients:
    """The load: client processes, each with a share of the tokens."""

    def __init__(
        self,
        tokens: list[str],
        processes: int,
        cpus: set[int] | None,
        paths: list[str] | None = None,
    ) -> None:
        self.processes = []
        for index in range(processes):
            process = subprocess.Popen(
                [sys.executable, "bench/load.py"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=pin(cpus),
            )
            setup = {
                "tokens": tokens[index::processes],
                "paths": paths[index::processes] if paths else None,
                # Nchan has no authentication: its clients send no token.
                "send_token": paths is None,
            }
            process.stdin.write(json.dumps(setup) + "\n")
            process.stdin.flush()
            assert json.loads(process.stdout.readline())["ready"]
            self.processes.append(process)

    def all(self, command: dict) -> list[dict]:
        for process in self.processes:
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        return [json.loads(process.stdout.readline()) for process in self.processes]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def start_connecting(self, port: int, concurrency: int) -> None:
        command = {"cmd": "connect", "port": port, "concurrency": concurrency}
        for process in self.processes:
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()

    def finish_connecting(self) -> list[dict]:
        return [json.loads(process.stdout.readline()) for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            try:
                process.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass
            process.wait(30)


def event_payload(content_type_id: int, number: int) -> str:
    """About 300 bytes of JSON, like an admin event; "t" is the publication time."""
    event = {
        "t": time.time(),
        "model": "article",
        "object": f"Benchmark object number {number}",
        "message": '[{"changed": {"fields": ["Title", "Body", "Published"]}}]',
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "user": "admin",
        "content_type_id": content_type_id,
        "object_id": str(number),
        "action": "change",
    }
    payload = json.dumps(event)
    return payload + " " * max(0, 300 - len(payload))


# Servers that route events with an audience (the guide's server and Nchan
# know only content types).
AUDIENCE_SERVERS = ("wsserver", "floor")
# The permission bench/make_users.py grants directly to 30% of the users.
AUDIENCE_PERMISSION = "catalog.add_article"
# Each phase of events with an audience: its name in the results.
AUDIENCE_PHASES = ("group", "permission", "personal", "personal_burst")


def app_event(name: str, number: int) -> str:
    """About 300 bytes of JSON, as clients receive an event of publish()
    (without history, so without an id); "t" is the publication time."""
    event = {
        "event": name,
        "data": {
            "t": time.time(),
            "object": f"Benchmark object number {number}",
            "url": f"/exports/{number}.csv",
            "message": "Your export is ready: 1,024 rows, 3 columns.",
            "object_id": str(number),
        },
    }
    payload = json.dumps(event)
    return payload + " " * max(0, 300 - len(payload))


@contextlib.contextmanager
def running_on(cpus: set[int] | None):
    """This process (the publisher) on ``cpus`` meanwhile (None: as it is).

    Publishing thousands of events a second takes CPU time: on the load
    generator's CPUs, not the server's.
    """
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def audience_phases(
    plan: list[dict],
    options,
    measure: Callable[..., dict],
    result: dict,
    bus: redis.Redis,
    channel: str,
    kind: str,
    profile: Callable[[str, float], subprocess.Popen | None],
) -> None:
    """Events with an audience, published as publish() does without history:
    ``PUBLISH channel @<audience>\\n<event>`` (wsserver.wire.addressed).

    - group and permission events, each for 30% of the users (see
      bench/make_users.py), at ``--audience-rate`` for ``--audience-seconds``
      (by default the steady phase's rate and length);
    - personal events, each for one user (every user in turn), at
      ``--personal-rate`` for ``--personal-seconds``, then
      ``--personal-burst`` of them published at once, as fast as Redis takes
      them: events per second until the last is delivered.
    """
    from wsserver.audience import encode_audience
    from wsserver.wire import addressed

    def paced(make: Callable[[int], str], count: int, rate: float):
        """Event ``i`` published at ``i / rate`` s (at high rates, every 2 ms
        the events due by then, in one round trip)."""

        def publish(started: float) -> None:
            sent = 0
            while True:
                due = min(count, int((time.perf_counter() - started) * rate) + 1)
                if due > sent:
                    with bus.pipeline(transaction=False) as pipeline:
                        for number in range(sent, due):
                            pipeline.publish(channel, make(number))
                        pipeline.execute()
                    sent = due
                if sent == count:
                    return
                # Until event number `sent` is due.
                wait = started + sent / rate - time.perf_counter()
                time.sleep(max(0.002 if rate > 500 else 0.0, wait))

        return publish

    def at_once(make: Callable[[int], str], count: int):
        def publish(started: float) -> None:
            for first in range(0, count, 500):
                with bus.pipeline(transaction=False) as pipeline:
                    for number in range(first, min(count, first + 500)):
                        pipeline.publish(channel, make(number))
                    pipeline.execute()

        return publish

    def phase(
        name: str, count: int, expected: int, publish, rate=None, spy_seconds=None
    ) -> None:
        seconds = spy_seconds or count / rate
        spy = lambda: profile(name, seconds)  # noqa: E731
        measured = measure(expected, publish, spy, poll=0.02)
        measured["events"] = count
        measured["rate"] = rate
        # Events delivered per second: from the first publication to the
        # last frame read by the clients.
        measured["events_per_s"] = count / (
            measured["last_frame_s"] or measured["seconds"]
        )
        result[name] = measured
        time.sleep(1)

    groups = sorted({g for entry in plan for g in entry.get("groups", ())})
    rate = options.audience_rate
    count = int(rate * options.audience_seconds)
    if groups and count:
        group = groups[0]
        audience = encode_audience(groups=[group])
        expected = sum(group in entry["groups"] for entry in plan) * count
        log(f"   {kind}: {count} group events at {rate:g}/s")
        phase(
            "group",
            count,
            expected,
            paced(
                lambda i: addressed(audience, app_event("bench.group", i)),
                count,
                rate,
            ),
            rate,
        )
    if (
        any(AUDIENCE_PERMISSION in entry.get("permissions", ()) for entry in plan)
        and count
    ):
        audience = encode_audience(permissions=[AUDIENCE_PERMISSION])
        expected = sum(AUDIENCE_PERMISSION in e["permissions"] for e in plan) * count
        log(f"   {kind}: {count} permission events at {rate:g}/s")
        phase(
            "permission",
            count,
            expected,
            paced(
                lambda i: addressed(audience, app_event("bench.permission", i)),
                count,
                rate,
            ),
            rate,
        )
    if "user" not in plan[0]:
        return
    # Each user's audience, encoded once: what is measured is the server.
    personal = [encode_audience(users=[entry["user"]]) for entry in plan]

    def make(number: int) -> str:
        return addressed(
            personal[number % len(personal)], app_event("bench.personal", number)
        )

    count = int(options.personal_rate * options.personal_seconds)
    if count:
        log(f"   {kind}: {count} personal events at {options.personal_rate:g}/s")
        phase(
            "personal",
            count,
            count,
            paced(make, count, options.personal_rate),
            options.personal_rate,
        )
    if options.personal_burst:
        count = options.personal_burst
        log(f"   {kind}: {count} personal events at once")
        phase("personal_burst", count, count, at_once(make, count), spy_seconds=5)


def percentile_ms(seconds: list[float], fraction: float) -> float | None:
    if not seconds:
        return None
    ordered = sorted(seconds)
    return ordered[max(0, int(len(ordered) * fraction) - 1)] * 1000


def cpu_split(options) -> tuple[set[int] | None, set[int] | None]:
    """The server's CPU and the load generator's: apart, so neither slows the other."""
    cpus = sorted(os.sched_getaffinity(0))
    if options.no_pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


LOOPBACK_RPS_CPUS = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")


@contextlib.contextmanager
def loopback_receive_on(cpus: set[int] | None):
    """Loopback's receive processing on these CPUs (RPS), as it was afterwards.

    Over loopback a send() also runs, on the sender's CPU, the receiving side's
    TCP work, and the sender later processes the receiver's ACKs the same way.
    Steering all of it to the load generator's CPUs shows what a delivery
    costs the server without it (ACK processing included, which a server on
    its own machine would do itself). Needs root.
    """
    if cpus is None:
        yield
        return
    previous = LOOPBACK_RPS_CPUS.read_text().strip()
    LOOPBACK_RPS_CPUS.write_text(format(sum(1 << cpu for cpu in cpus), "x"))
    try:
        yield
    finally:
        LOOPBACK_RPS_CPUS.write_text(previous)


SCRAPES = 20


def py_spy(pid: int, seconds: float, output: Path, cpus: set[int] | None):
    """py-spy recording a process for ``seconds`` (raw, collapsed stacks)."""
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [executable, "record", "--pid", str(pid), "--duration"]
    command += [str(max(1, round(seconds))), "--rate", "200", "--format", "raw"]
    command += ["--nonblocking", "--output", str(output)]
    return subprocess.Popen(
        command,
        preexec_fn=pin(cpus),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_server(
    kind,
    env,
    plan,
    plan_path,
    options,
    workers: int = 1,
    pinned: bool = True,
    light: bool = True,
) -> dict:
    audiences = light and options.audiences and kind in AUDIENCE_SERVERS
    channel = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    bus = redis.Redis.from_url(REDIS_URL)
    tokens = [entry["token"] for entry in plan]
    by_type: dict[int | None, int] = {}
    for entry in plan:
        by_type[entry["content_type_id"]] = by_type.get(entry["content_type_id"], 0) + 1
    content_types = sorted(ct for ct in by_type if ct is not None)
    n = len(tokens)
    log(f"== {kind}: starting" + (f" with WS_WORKERS={workers}" if workers > 1 else ""))
    server_cpus, load_cpus = cpu_split(options) if pinned else (None, None)
    server = Server(kind, env, plan_path, channel, server_cpus, workers)
    try:
        clients = Clients(tokens, options.load_processes, load_cpus, server.paths(plan))
    except BaseException:
        server.stop()
        raise
    result = {"connections": n}
    if server.source is not None:
        result["source"] = server.source
    steal_before, ticks_before = machine_ticks()
    try:
        time.sleep(0.5)
        rss_before = rss_bytes(server.process.pid)

        log(f"   {kind}: connecting {n} clients, {options.concurrency} at a time")
        cpu_before = cpu_seconds(server.process.pid)
        load_before = clients.cpu_seconds()
        clients.start_connecting(
            server.port, options.concurrency // len(clients.processes)
        )
        seconds = server.wait(lambda: server.count() == n, 300, "authentication")
        result["auth_load_cpu_share"] = (clients.cpu_seconds() - load_before) / seconds
        clients.finish_connecting()
        result["auth_per_s"] = n / seconds
        result["round_trips_per_auth"] = server.metric(
            "wsserver_authentication_queries_total"
        )
        if result["round_trips_per_auth"] is not None:
            result["round_trips_per_auth"] /= n
        result["auth_cpu_us"] = (cpu_seconds(server.process.pid) - cpu_before) / n * 1e6
        time.sleep(2)
        result["kib_per_connection"] = (
            (rss_bytes(server.process.pid) - rss_before) / n / 1024
        )

        def profile(phase: str, seconds: float):
            if not (options.py_spy and kind == "wsserver" and light):
                return None
            options.py_spy.mkdir(parents=True, exist_ok=True)
            output = options.py_spy / f"{kind}-{phase}.txt"
            log(f"   {kind}: py-spy during the {phase} phase: {output}")
            return py_spy(server.process.pid, seconds, output, load_cpus)

        def deliver(events: list[int], rate: float | None, phase: str = "") -> dict:
            def publish(started: float) -> None:
                if rate is None:
                    server.publish(
                        bus,
                        [(ct, event_payload(ct, i)) for i, ct in enumerate(events)],
                        True,
                    )
                    return
                for number, ct in enumerate(events):
                    server.publish(bus, [(ct, event_payload(ct, number))], False)
                    time.sleep(
                        max(0.0, started + (number + 1) / rate - time.perf_counter())
                    )

            expected = sum(by_type[ct] for ct in events)
            spy = (
                (lambda: profile(phase, len(events) / rate)) if rate and phase else None
            )
            return measure(expected, publish, spy)

        def measure(
            expected: int,
            publish: Callable[[float], None],
            spy: Callable[[], subprocess.Popen | None] | None = None,
            poll: float = 0.1,
        ) -> dict:
            """Publish (``publish(started)``), wait for ``expected`` frames."""
            clients.all({"cmd": "reset"})
            load_cpu = sum(s["cpu"] for s in clients.all({"cmd": "stats"}))
            spy = spy() if spy is not None else None
            user_start, system_start = cpu_times(server.process.pid)
            started, wall = time.perf_counter(), time.time()
            publish(started)
            published = time.perf_counter() - started
            deadline = time.perf_counter() + 30
            while True:
                stats = clients.all({"cmd": "stats"})
                delivered = sum(s["frames"] for s in stats)
                if delivered >= expected or time.perf_counter() > deadline:
                    break
                time.sleep(poll)
            elapsed = time.perf_counter() - started
            user, system = cpu_times(server.process.pid)
            user, system = user - user_start, system - system_start
            cpu = user + system
            if spy is not None:
                spy.wait(60)
            arrived = [x for s in stats for x in s["arrival_latencies"]]
            # Per event: its first and last sampled recipients.
            spans: dict[int, list[float]] = {}
            for stat in stats:
                for event, latency in stat["arrivals"]:
                    span = spans.setdefault(event, [latency, latency])
                    span[0], span[1] = min(span[0], latency), max(span[1], latency)
            read = [x for s in stats for x in s["latencies"]]
            return {
                "delivered": delivered,
                "expected": expected,
                "cpu_us_per_delivery": cpu / max(delivered, 1) * 1e6,
                "kernel_share": system / cpu if cpu else None,
                # To the client's socket (the kernel's receive timestamp).
                "p50_ms": percentile_ms(arrived, 0.50),
                "p99_ms": percentile_ms(arrived, 0.99),
                # To the load generator reading it, among thousands of sockets.
                "read_p99_ms": percentile_ms(read, 0.99),
                "first_ms": percentile_ms([a for a, _ in spans.values()], 0.5),
                "last_ms": percentile_ms([b for _, b in spans.values()], 0.5),
                "events_ms": [
                    [event, round(a * 1000, 2), round(b * 1000, 2)]
                    for event, (a, b) in sorted(spans.items())
                ],
                "load_cpu_share": (sum(s["cpu"] for s in stats) - load_cpu) / elapsed,
                "seconds": elapsed,
                # Until publish() returned, and until the last frame was read.
                "published_s": published,
                "last_frame_s": max(
                    (s["last"] - wall for s in stats if s["last"] is not None),
                    default=None,
                ),
                "cpu_s": cpu,
                "pings_per_client": sum(s["pings"] for s in stats) / n,
                "lost": sum(s["lost"] for s in stats),
            }

        if light and options.idle_seconds > 0:
            # Every client connected (and authenticated), no events: what the
            # fixed costs of idle connections are (keepalive, timers, the
            # collector), with nothing scraping the server meanwhile.
            log(f"   {kind}: idle for {options.idle_seconds:g} s")
            clients.all({"cmd": "reset"})
            spy = profile("idle", options.idle_seconds)
            user_start, system_start = cpu_times(server.process.pid)
            started = time.perf_counter()
            time.sleep(options.idle_seconds)
            user, system = cpu_times(server.process.pid)
            elapsed = time.perf_counter() - started
            stats = clients.all({"cmd": "stats"})
            if spy is not None:
                spy.wait(60)
            # Sums of clock ticks: round off what floating point adds.
            used = round(user + system - user_start - system_start, 6)
            result["idle"] = {
                "seconds": elapsed,
                "cpu_ms_per_s": used / elapsed * 1000,
                "kernel_share": round(system - system_start, 6) / max(used, 1e-9),
                "pings_per_client": sum(s["pings"] for s in stats) / n,
                "lost": sum(s["lost"] for s in stats),
            }
            if server.metrics_ports:
                # What one Prometheus scrape costs, with every client connected.
                before = cpu_seconds(server.process.pid)
                for _ in range(SCRAPES):
                    server.metric("wsserver_connections")
                result["idle"]["scrape_cpu_ms"] = (
                    (cpu_seconds(server.process.pid) - before) / SCRAPES * 1000
                )
        if light and options.light_seconds > 0:
            count = max(1, int(options.light_rate * options.light_seconds))
            events = [content_types[i % len(content_types)] for i in range(count)]
            log(f"   {kind}: {count} events at {options.light_rate:g}/s (light load)")
            result["light"] = deliver(events, options.light_rate, "light")
            time.sleep(1)

        count = int(options.rate * options.seconds)
        steady = [content_types[i % len(content_types)] for i in range(count)]
        log(f"   {kind}: {count} events at {options.rate}/s")
        result["steady"] = deliver(steady, options.rate)
        burst = [content_types[i % len(content_types)] for i in range(options.burst)]
        log(f"   {kind}: a burst of {options.burst} events")
        time.sleep(1)
        result["burst"] = deliver(burst, None)

        if audiences:
            # Events with an audience (wsserver.audience): not the admin's
            # shape, so only the servers that route them.
            with running_on(load_cpus):
                audience_phases(
                    plan, options, measure, result, bus, channel, kind, profile
                )

        log(f"   {kind}: reconnect storm of {n} clients")
        clients.all({"cmd": "close"})
        server.wait(lambda: server.count() == 0, 60, "disconnection")
        clients.start_connecting(server.port, n)
        result["storm_s"] = server.wait(lambda: server.count() == n, 120, "storm")
        clients.finish_connecting()
        steal, ticks = machine_ticks()
        result["steal_share"] = (steal - steal_before) / max(ticks - ticks_before, 1)
    finally:
        clients.stop()
        server.stop()
    return result


COLUMNS = {
    "baseline": "baseline (guide)",
    "wsserver": "wsserver",
    "floor": "floor",
    "nchan": "nchan",
}


def table(results: dict, queries: dict, options) -> tuple[str, float]:
    """The servers measured side by side, with wsserver's ratio to each other."""
    kinds = [k for k in COLUMNS if k in results and "skipped" not in results[k]]
    others = [k for k in kinds if k != "wsserver"] if "wsserver" in kinds else []

    def pct(share):
        return None if share is None else share * 100

    def fmt(value, digits=1):
        return "-" if value is None else f"{value:,.{digits}f}"

    def get(result, *keys):
        for key in keys:
            if not isinstance(result, dict) or key not in result:
                return None
            result = result[key]
        return result

    def row(name, digits, *keys, values=None):
        return (name, digits, values or {k: get(results[k], *keys) for k in kinds})

    light = f"{options.light_rate:g} ev/s"
    steady = f"{options.rate:g} ev/s"
    rows = [
        row("connections", 0, "connections"),
        # The floor and Nchan authenticate no one: only their handshakes.
        row(
            "auth conn/s",
            0,
            values={
                k: results[k]["auth_per_s"] if k in ("baseline", "wsserver") else None
                for k in kinds
            },
        ),
        row("reconnect storm, s", 2, "storm_s"),
        row("DB queries per auth", 2, values={k: queries.get(k) for k in kinds}),
        row("KiB RSS per idle connection", 1, "kib_per_connection"),
        row("idle CPU, ms per second (no events)", 2, "idle", "cpu_ms_per_s"),
        row("CPU ms per metrics scrape (idle)", 2, "idle", "scrape_cpu_ms"),
        row(
            "keepalive pings per connection per minute (idle)",
            2,
            values={
                k: None
                if get(results[k], "idle") is None
                else results[k]["idle"]["pings_per_client"]
                / results[k]["idle"]["seconds"]
                * 60
                for k in kinds
            },
        ),
        row(f"CPU µs per delivery ({light})", 2, "light", "cpu_us_per_delivery"),
        row(f"CPU µs per delivery ({steady})", 2, "steady", "cpu_us_per_delivery"),
        row(
            "kernel share of that CPU, %",
            0,
            values={k: pct(get(results[k], "steady", "kernel_share")) for k in kinds},
        ),
        row("CPU µs per delivery (burst)", 2, "burst", "cpu_us_per_delivery"),
        row("latency p50, ms (to the client's socket)", 1, "steady", "p50_ms"),
        row("latency p99, ms (to the client's socket)", 1, "steady", "p99_ms"),
        row("latency p99, ms (read by the load generator)", 1, "steady", "read_p99_ms"),
        row(
            "each event's first sampled recipient, ms (median)", 1, "steady", "first_ms"
        ),
        row("each event's last sampled recipient, ms (median)", 1, "steady", "last_ms"),
        row("latency p99 in the burst, ms (to the socket)", 1, "burst", "p99_ms"),
    ]
    header = [COLUMNS[k] for k in kinds] + [f"wsserver / {k}" for k in others]
    lines = [
        f"| metric | {' | '.join(header)} |",
        f"| --- |{' ---: |' * len(header)}",
    ]
    for name, digits, values in rows:
        cells = [fmt(values[k], digits) for k in kinds]
        ws = values.get("wsserver")
        cells += [f"{ws / values[k]:.2f}x" if ws and values[k] else "-" for k in others]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    blank = " |" * len(others)
    for phase in ("light", "steady", "burst"):
        cells = [
            f"{results[k][phase]['delivered']:,}/{results[k][phase]['expected']:,}"
            if phase in results[k]
            else "-"
            for k in kinds
        ]
        lines.append(f"| delivered/expected ({phase}) | {' | '.join(cells)} |{blank}")
    steal = [results[k].get("steal_share") for k in kinds]
    if None not in steal:
        cells = [f"{share:.1%}" for share in steal]
        lines.append(
            f"| CPU time stolen by the hypervisor | {' | '.join(cells)} |{blank}"
        )
    load = max(
        (results[k][p]["load_cpu_share"] for k in kinds for p in ("steady", "burst")),
        default=0.0,
    )
    lines.append("")
    for kind, result in results.items():
        if kind in COLUMNS and "skipped" in result:
            lines.append(f"{kind}: not measured: {result['skipped']}.")
    if "floor" in kinds:
        floor = results["floor"]
        recipients = floor["steady"]["expected"] / (options.rate * options.seconds)
        bound = 0.99 * recipients * floor["steady"]["cpu_us_per_delivery"] / 1000
        lines.append(
            f"Each steady event has {recipients:,.0f} recipients: at the floor's CPU "
            f"cost per delivery, the 99th percentile of them gets it at least "
            f"{bound:.1f} ms after publication, whatever the server."
        )
    source = results.get("wsserver", {}).get("source")
    if source and not source.startswith(str(ROOT / "wsserver")):
        lines.append(f"wsserver imported from {source} (PYTHONPATH).")
    return "\n".join(lines), load


def audience_table(results: dict, options) -> str:
    """Events with an audience: wsserver against the floor, in the same run."""
    kinds = [
        k
        for k in AUDIENCE_SERVERS
        if k in results and any(p in results[k] for p in AUDIENCE_PHASES)
    ]
    if not kinds:
        return ""
    both = kinds == ["wsserver", "floor"]

    def get(kind, phase, key):
        return results[kind].get(phase, {}).get(key)

    def net(kind, phase):
        """CPU µs per delivery less what the idle connections cost meanwhile."""
        measured, idle = results[kind].get(phase), results[kind].get("idle")
        if measured is None or idle is None:
            return None
        cpu = measured["cpu_s"] - idle["cpu_ms_per_s"] / 1000 * measured["seconds"]
        return cpu / max(measured["delivered"], 1) * 1e6

    def lag(kind, phase):
        """How long after publishing ended the clients read the last frame."""
        measured = results[kind].get(phase)
        if measured is None or measured.get("last_frame_s") is None:
            return None
        return (measured["last_frame_s"] - measured["published_s"]) * 1000

    def per_cpu(kind, phase):
        """Events one CPU could carry at this CPU cost per event."""
        each = get(kind, phase, "cpu_us_per_delivery")
        return 1e6 / each if each else None

    # Content type events at the group and permission events' rate.
    rate = f"{options.audience_rate:g} ev/s"
    reference = None
    if options.audience_rate == options.light_rate and options.light_seconds > 0:
        reference = "light"
    elif options.audience_rate == options.rate:
        reference = "steady"
    steady = f"{options.rate:g} ev/s"
    personal = f"{options.personal_rate:,.0f} ev/s"
    burst = f"{options.personal_burst:,} at once"

    def row(name, digits, phase, key=None, function=None):
        if function is not None:
            return name, digits, {k: function(k, phase) for k in kinds}
        return name, digits, {k: get(k, phase, key) for k in kinds}

    delivery = "cpu_us_per_delivery"
    rows = [
        row(f"CPU µs per delivery, group events ({rate})", 2, "group", delivery),
        row(
            f"CPU µs per delivery, permission events ({rate})",
            2,
            "permission",
            delivery,
        ),
        row("latency p99, ms, group events (to the socket)", 1, "group", "p99_ms"),
        row(
            "latency p99, ms, permission events (to the socket)",
            1,
            "permission",
            "p99_ms",
        ),
        row(f"CPU µs per personal event ({personal})", 2, "personal", delivery),
        row("the same, less idle CPU (the idle phase's)", 2, "personal", function=net),
        row(
            "personal events/s one CPU could carry at that cost",
            0,
            "personal",
            function=per_cpu,
        ),
        row(
            f"personal events/s delivered, published at {personal}",
            0,
            "personal",
            "events_per_s",
        ),
        row(
            "the last one read, ms after the last was published",
            1,
            "personal",
            function=lag,
        ),
        row(
            "latency p50, ms, personal events (to the socket)", 1, "personal", "p50_ms"
        ),
        row(
            "latency p99, ms, personal events (to the socket)", 1, "personal", "p99_ms"
        ),
        row(f"CPU µs per personal event ({burst})", 2, "personal_burst", delivery),
        row(f"personal events/s ({burst})", 0, "personal_burst", "events_per_s"),
    ]
    if reference is not None:
        rows.insert(
            0,
            row(
                f"CPU µs per delivery, content type events ({rate}, {reference})",
                2,
                reference,
                delivery,
            ),
        )
    header = [COLUMNS[k] for k in kinds] + (["wsserver / floor"] if both else [])
    lines = [
        "",
        "Events with an audience (`@<audience>\\n<event>` on the bus), against the "
        "floor in the same run: group and permission events each for 30% of the "
        f"users at {rate}, personal events each for one user (every user in turn). "
        "The guide's server and Nchan route content types only: not measured.",
        "",
        f"| metric | {' | '.join(header)} |",
        f"| --- |{' ---: |' * len(header)}",
    ]
    for name, digits, values in rows:
        if all(v is None for v in values.values()):
            continue
        cells = [
            "-" if values[k] is None else f"{values[k]:,.{digits}f}" for k in kinds
        ]
        if both:
            a, b = values["wsserver"], values["floor"]
            cells.append(f"{a / b:.2f}x" if a and b else "-")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    blank = " |" if both else ""
    for phase in AUDIENCE_PHASES:
        if not any(phase in results[k] for k in kinds):
            continue
        cells = [
            f"{results[k][phase]['delivered']:,}/{results[k][phase]['expected']:,}"
            if phase in results[k]
            else "-"
            for k in kinds
        ]
        lines.append(
            f"| delivered/expected ({phase.replace('_', ' ')}) | "
            f"{' | '.join(cells)} |{blank}"
        )
    lines.append("")
    if not both:
        return "\n".join(lines) + "\n"
    for phase in ("group", "permission"):
        a = get("wsserver", phase, delivery)
        b = get("floor", phase, delivery)
        if a and b:
            same = ""
            if reference is not None:
                c = get("wsserver", reference, delivery)
                d = get("floor", reference, delivery)
                if c and d:
                    same = f" (content type events at {rate}: {c / d:.2f}x)"
            lines.append(
                f"{phase.capitalize()} events: wsserver spends {a / b:.2f}x the "
                f"floor's CPU per delivery{same}."
            )
    floor = get("floor", "steady", delivery)
    each = get("wsserver", "personal", delivery)
    if floor and each:
        less_idle = net("wsserver", "personal")
        deducted = (
            f" ({less_idle / floor:.2f}x with the idle CPU deducted)"
            if less_idle
            else ""
        )
        own = get("floor", "personal", delivery)
        theirs = (
            f", and {each / own:.2f}x what a personal event costs the floor "
            f"({own:.2f} µs)"
            if own
            else ""
        )
        lines.append(
            f"A personal event costs wsserver {each:.2f} µs of CPU: "
            f"{each / floor:.2f}x the floor's cost of one delivery "
            f"({floor:.2f} µs, content type events at {steady}){deducted}"
            f"{theirs}."
        )
    return "\n".join(lines) + "\n"


def placement(options) -> str:
    server_cpus, load_cpus = cpu_split(options)
    if server_cpus is None:
        return "Servers and load generator share every CPU."
    load = ", ".join(map(str, sorted(load_cpus)))
    steered = (
        f" Loopback's receive processing steered to CPU {load} (RPS)."
        if options.receive_on_load_cpus
        else ""
    )
    return (
        f"Each server pinned to CPU {min(server_cpus)}, the load generator "
        f"({options.load_processes} process) to CPU {load}.{steered}"
    )


def cores_table(results: dict, options) -> str:
    one = results["wsserver-1-unpinned"]
    many = results[f"wsserver-{options.workers}-unpinned"]
    rows = [
        ("auth conn/s", one["auth_per_s"], many["auth_per_s"], 0),
        ("reconnect storm, s", one["storm_s"], many["storm_s"], 2),
        (
            "CPU µs per delivery (20 ev/s)",
            one["steady"]["cpu_us_per_delivery"],
            many["steady"]["cpu_us_per_delivery"],
            2,
        ),
        (
            "latency p50, ms (to the client's socket)",
            one["steady"]["p50_ms"],
            many["steady"]["p50_ms"],
            1,
        ),
        (
            "latency p99, ms (to the client's socket)",
            one["steady"]["p99_ms"],
            many["steady"]["p99_ms"],
            1,
        ),
        (
            "latency p99 in the burst, ms (to the socket)",
            one["burst"]["p99_ms"],
            many["burst"]["p99_ms"],
            1,
        ),
    ]
    lines = [
        "",
        f"All cores: `WS_WORKERS={options.workers}` against one process, same load, "
        "nothing pinned (the load generator shares the cores).",
        "",
        f"| metric | WS_WORKERS=1 | WS_WORKERS={options.workers} | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a, b, digits in rows:
        ratio = f"{b / a:.2f}x" if a and b else "-"
        lines.append(f"| {name} | {a:,.{digits}f} | {b:,.{digits}f} | {ratio} |")
    for phase in ("steady", "burst"):
        cells = [
            f"{r[phase]['delivered']:,}/{r[phase]['expected']:,}" for r in (one, many)
        ]
        lines.append(f"| delivered/expected ({phase}) | {' | '.join(cells)} | |")
    steal = [r.get("steal_share") for r in (one, many)]
    if None not in steal:
        cells = [f"{share:.1%}" for share in steal]
        lines.append(f"| CPU time stolen by the hypervisor | {' | '.join(cells)} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 clients, short")
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "results",
        help="directory for the table (.md) and the raw numbers (.json)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--light-rate",
        type=float,
        default=5.0,
        help="events per second of the light-load phase (before the steady one)",
    )
    parser.add_argument(
        "--light-seconds",
        type=float,
        default=40.0,
        help="length of the light-load phase (0: skip it); 40 s holds a whole "
        "keepalive cycle of each server at their default settings",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=40.0,
        help="length of the idle phase: every client connected, no events (0: skip it)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record wsserver with py-spy (raw, collapsed stacks) during the "
        "idle, light-load, group, permission and personal phases, into DIR "
        "(needs ptrace; py-spy runs on the load generator's CPU)",
    )
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument(
        "--no-audiences",
        dest="audiences",
        action="store_false",
        help="skip the phases of events with an audience (group, permission "
        "and personal events; wsserver and the floor only)",
    )
    parser.add_argument(
        "--audience-rate",
        type=float,
        help="group and permission events per second (default: --rate); "
        "compared with the floor at that rate, and with the content type "
        "events of the light or steady phase if either has that rate",
    )
    parser.add_argument(
        "--audience-seconds",
        type=float,
        help="length of the group and of the permission phases (default: "
        "--seconds; 0: skip them)",
    )
    parser.add_argument(
        "--personal-rate",
        type=float,
        default=5000.0,
        help="personal events (each for one user) per second",
    )
    parser.add_argument(
        "--personal-seconds",
        type=float,
        default=4.0,
        help="length of the personal events phase (0: skip it)",
    )
    parser.add_argument(
        "--personal-burst",
        type=int,
        default=10_000,
        help="personal events published at once, as fast as Redis takes them "
        "(0: skip them)",
    )
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the server and the load share every CPU",
    )
    parser.add_argument(
        "--receive-on-load-cpus",
        action="store_true",
        help="steer loopback's receive processing to the load generator's CPUs "
        "(RPS; needs root) while the pinned servers run: see docs/benchmarks.md",
    )
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument(
        "--servers",
        default="baseline,wsserver,floor,nchan",
        help="comma-separated, among baseline, wsserver, floor and nchan",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="WS_WORKERS for the all-cores comparison (1: skip it)",
    )
    options = parser.parse_args()
    if options.quick:
        options.clients, options.seconds = 1000, 5.0
        options.idle_seconds = min(options.idle_seconds, 10.0)
        options.light_seconds = min(options.light_seconds, 10.0)
        options.personal_seconds = min(options.personal_seconds, 2.0)
        options.personal_burst = min(options.personal_burst, options.clients)
    if options.audience_rate is None:
        options.audience_rate = options.rate
    if options.audience_seconds is None:
        options.audience_seconds = options.seconds
    servers = options.servers.split(",")
    unknown = set(servers) - set(COLUMNS)
    if unknown:
        parser.error(f"--servers: unknown {', '.join(sorted(unknown))}")
    steer_to = None
    if options.receive_on_load_cpus:
        steer_to = cpu_split(options)[1]
        if steer_to is None:
            parser.error("--receive-on-load-cpus needs pinning and 2 CPUs or more")
        if not os.access(LOOPBACK_RPS_CPUS, os.W_OK):
            parser.error(f"--receive-on-load-cpus needs root: {LOOPBACK_RPS_CPUS}")

    env = {
        **os.environ,
        "SECRET_KEY": SECRET_KEY,
        "REDIS_URL": REDIS_URL,
        "SESAME_MAX_AGE": "86400",
        # The guide's server (the baseline) accepts tokens of sesame's default
        # scope only: every server gets the same tokens. The scope costs
        # nothing either way.
        "WSSERVER_SESAME_SCOPE": "",
        "WS_SESAME_SCOPE": "",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    with Database() as database, tempfile.TemporaryDirectory() as directory:
        env["DATABASE_URL"] = database.url
        plan_path = os.path.join(directory, "plan.json")
        log(f"Creating {options.clients} users in {database.name}")
        subprocess.run(
            [sys.executable, "example/manage.py", "migrate", "-v", "0"],
            env=env,
            cwd=ROOT,
            check=True,
        )
        subprocess.run(
            [sys.executable, "bench/make_users.py", str(options.clients), plan_path],
            env=env,
            cwd=ROOT,
            check=True,
        )
        # Now rather than by autovacuum in the middle of a measurement.
        with psycopg.connect(database.url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
        plan = json.loads(Path(plan_path).read_text())
        counted = subprocess.run(
            [sys.executable, "bench/count_queries.py", plan_path],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if counted.returncode != 0:
            raise RuntimeError(f"bench/count_queries.py failed:\n{counted.stderr}")
        queries = json.loads(counted.stdout)
        results = {}
        with loopback_receive_on(steer_to):
            for kind in servers:
                why = nchan_available() if kind == "nchan" else None
                if why is not None:
                    log(f"== nchan: NOT MEASURED, its column is skipped: {why}")
                    results[kind] = {"skipped": why}
                    continue
                results[kind] = run_server(kind, env, plan, plan_path, options)
        if options.workers > 1 and "wsserver" in results:
            # All cores: one process against WS_WORKERS, every process free
            # to run on any CPU (the load generator's included).
            for workers in (1, options.workers):
                results[f"wsserver-{workers}-unpinned"] = run_server(
                    "wsserver",
                    env,
                    plan,
                    plan_path,
                    options,
                    workers,
                    pinned=False,
                    light=False,
                )

    results_dir = options.results
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / ("quick.json" if options.quick else "latest.json")).write_text(
        json.dumps({"results": results, "queries": queries}, indent=1, default=str)
    )
    rendered, load = table(results, queries, options)
    addressed = audience_table(results, options)
    cores = (
        cores_table(results, options)
        if options.workers > 1 and "wsserver" in results
        else ""
    )
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    arguments = " ".join(sys.argv[1:])
    command = f"make bench ARGS='{arguments}'" if arguments else "make bench"
    report = (
        f"Command: `{command}`{'' if arguments else ' (defaults)'}; "
        f"{options.clients:,} clients; idle for {options.idle_seconds:g} s, "
        f"{options.light_rate:g} events/s for {options.light_seconds:g} s, "
        f"{options.rate:g} events/s for "
        f"{options.seconds:g} s, bursts of {options.burst}; "
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}. {placement(options)}\n\n"
        f"{rendered}\n\n"
        f"Load generator CPU (all client processes, busiest phase): "
        f"{load:.0%} of one core.\n{cores}{addressed}"
    )
    print(report)
    (results_dir / ("quick.md" if options.quick else "latest.md")).write_text(report)


if __name__ == "__main__":
    main()
