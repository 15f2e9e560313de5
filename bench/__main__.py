"""``python -m bench``: wsserver against the guide's approach and the floor.

Creates users in a throwaway PostgreSQL database (the example site's schema),
then for each server (the baseline of bench/baseline.py, wsserver, the floor
of bench/floor.py) runs the same load from separate client processes:
connect every client, let them idle, publish events at a steady rate, publish
a burst, then drop every client and reconnect them all at once. Prints one
table and writes it to bench/results/latest.md. Loopback only; every phase is
bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
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
        python = sys.executable
        if kind == "wsserver":
            command = [python, "-m", "wsserver"]
            env = {
                **env,
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
        else:
            command = [python, "bench/floor.py", str(self.port), REDIS_URL, channel]
            command.append(plan_path)
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, preexec_fn=pin(cpus)
        )
        self.wait(lambda: self.count() is not None, 30, "start")

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
                return int(response.read().decode())
        except OSError:
            return None

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


class Clients:
    """The load: client processes, each with a share of the tokens."""

    def __init__(
        self, tokens: list[str], processes: int, cpus: set[int] | None
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
            process.stdin.write(json.dumps(tokens[index::processes]) + "\n")
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


def run_server(
    kind, env, plan, plan_path, options, workers: int = 1, pinned: bool = True
) -> dict:
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
    clients = Clients(tokens, options.load_processes, load_cpus)
    result = {"connections": n}
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

        def deliver(events: list[int], rate: float | None) -> dict:
            clients.all({"cmd": "reset"})
            load_cpu = sum(s["cpu"] for s in clients.all({"cmd": "stats"}))
            expected = sum(by_type[ct] for ct in events)
            user_start, system_start = cpu_times(server.process.pid)
            started = time.perf_counter()
            if rate is None:
                with bus.pipeline(transaction=False) as pipeline:
                    for number, ct in enumerate(events):
                        pipeline.publish(channel, event_payload(ct, number))
                    pipeline.execute()
            else:
                for number, ct in enumerate(events):
                    bus.publish(channel, event_payload(ct, number))
                    time.sleep(
                        max(0.0, started + (number + 1) / rate - time.perf_counter())
                    )
            deadline = time.perf_counter() + 30
            while True:
                stats = clients.all({"cmd": "stats"})
                delivered = sum(s["frames"] for s in stats)
                if delivered >= expected or time.perf_counter() > deadline:
                    break
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            user, system = cpu_times(server.process.pid)
            user, system = user - user_start, system - system_start
            cpu = user + system
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
            }

        count = int(options.rate * options.seconds)
        steady = [content_types[i % len(content_types)] for i in range(count)]
        log(f"   {kind}: {count} events at {options.rate}/s")
        result["steady"] = deliver(steady, options.rate)
        burst = [content_types[i % len(content_types)] for i in range(options.burst)]
        log(f"   {kind}: a burst of {options.burst} events")
        time.sleep(1)
        result["burst"] = deliver(burst, None)

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


def table(results: dict, queries: dict, options) -> str:
    base, ws, floor = results["baseline"], results["wsserver"], results["floor"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    def pct(share):
        return None if share is None else share * 100

    def fmt(value, digits=1):
        return "-" if value is None else f"{value:,.{digits}f}"

    rows = [
        (
            "connections",
            base["connections"],
            ws["connections"],
            floor["connections"],
            0,
        ),
        ("auth conn/s", base["auth_per_s"], ws["auth_per_s"], None, 0),
        ("reconnect storm, s", base["storm_s"], ws["storm_s"], floor["storm_s"], 2),
        ("DB queries per auth", queries["baseline"], queries["wsserver"], None, 2),
        (
            "KiB RSS per idle connection",
            base["kib_per_connection"],
            ws["kib_per_connection"],
            floor["kib_per_connection"],
            1,
        ),
        (
            "CPU µs per delivery (20 ev/s)",
            base["steady"]["cpu_us_per_delivery"],
            ws["steady"]["cpu_us_per_delivery"],
            floor["steady"]["cpu_us_per_delivery"],
            2,
        ),
        (
            "kernel share of that CPU, %",
            pct(base["steady"].get("kernel_share")),
            pct(ws["steady"].get("kernel_share")),
            pct(floor["steady"].get("kernel_share")),
            0,
        ),
        (
            "CPU µs per delivery (burst)",
            base["burst"]["cpu_us_per_delivery"],
            ws["burst"]["cpu_us_per_delivery"],
            floor["burst"]["cpu_us_per_delivery"],
            2,
        ),
        (
            "latency p50, ms (to the client's socket)",
            base["steady"]["p50_ms"],
            ws["steady"]["p50_ms"],
            floor["steady"]["p50_ms"],
            1,
        ),
        (
            "latency p99, ms (to the client's socket)",
            base["steady"]["p99_ms"],
            ws["steady"]["p99_ms"],
            floor["steady"]["p99_ms"],
            1,
        ),
        (
            "latency p99, ms (read by the load generator)",
            base["steady"]["read_p99_ms"],
            ws["steady"]["read_p99_ms"],
            floor["steady"]["read_p99_ms"],
            1,
        ),
        (
            "each event's first sampled recipient, ms (median)",
            base["steady"]["first_ms"],
            ws["steady"]["first_ms"],
            floor["steady"]["first_ms"],
            1,
        ),
        (
            "each event's last sampled recipient, ms (median)",
            base["steady"]["last_ms"],
            ws["steady"]["last_ms"],
            floor["steady"]["last_ms"],
            1,
        ),
        (
            "latency p99 in the burst, ms (to the socket)",
            base["burst"]["p99_ms"],
            ws["burst"]["p99_ms"],
            floor["burst"]["p99_ms"],
            1,
        ),
    ]
    lines = [
        "| metric | baseline (guide) | wsserver | floor | wsserver / baseline "
        "| wsserver / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, b, w, f, digits in rows:
        lines.append(
            f"| {name} | {fmt(b, digits)} | {fmt(w, digits)} | {fmt(f, digits)} "
            f"| {ratio(w, b)} | {ratio(w, f)} |"
        )
    for phase in ("steady", "burst"):
        cells = [
            f"{r[phase]['delivered']:,}/{r[phase]['expected']:,}"
            for r in (base, ws, floor)
        ]
        lines.append(f"| delivered/expected ({phase}) | {' | '.join(cells)} | | |")
    steal = [r.get("steal_share") for r in (base, ws, floor)]
    if None not in steal:
        cells = [f"{share:.1%}" for share in steal]
        lines.append(f"| CPU time stolen by the hypervisor | {' | '.join(cells)} | | |")
    load = max(
        r[p]["load_cpu_share"] for r in (base, ws, floor) for p in ("steady", "burst")
    )
    recipients = floor["steady"]["expected"] / (options.rate * options.seconds)
    bound = 0.99 * recipients * floor["steady"]["cpu_us_per_delivery"] / 1000
    lines += [
        "",
        f"Each steady event has {recipients:,.0f} recipients: at the floor's CPU "
        f"cost per delivery, the 99th percentile of them gets it at least "
        f"{bound:.1f} ms after publication, whatever the server.",
    ]
    return "\n".join(lines), load


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
    parser.add_argument("--burst", type=int, default=100)
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
    parser.add_argument("--servers", default="baseline,wsserver,floor")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="WS_WORKERS for the all-cores comparison (1: skip it)",
    )
    options = parser.parse_args()
    if options.quick:
        options.clients, options.seconds = 1000, 5.0
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
            for kind in options.servers.split(","):
                results[kind] = run_server(kind, env, plan, plan_path, options)
        if options.workers > 1 and "wsserver" in results:
            # All cores: one process against WS_WORKERS, every process free
            # to run on any CPU (the load generator's included).
            for workers in (1, options.workers):
                results[f"wsserver-{workers}-unpinned"] = run_server(
                    "wsserver", env, plan, plan_path, options, workers, pinned=False
                )

    results_dir = options.results
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / ("quick.json" if options.quick else "latest.json")).write_text(
        json.dumps({"results": results, "queries": queries}, indent=1, default=str)
    )
    if not {"baseline", "wsserver", "floor"} <= set(results):
        print(json.dumps(results, indent=1, default=str))
        return
    rendered, load = table(results, queries, options)
    cores = cores_table(results, options) if options.workers > 1 else ""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    arguments = " ".join(sys.argv[1:])
    command = f"make bench ARGS='{arguments}'" if arguments else "make bench"
    report = (
        f"Command: `{command}`{'' if arguments else ' (defaults)'}; "
        f"{options.clients:,} clients, {options.rate:g} events/s for "
        f"{options.seconds:g} s, bursts of {options.burst}; "
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}. {placement(options)}\n\n"
        f"{rendered}\n\n"
        f"Load generator CPU (all client processes, busiest phase): "
        f"{load:.0%} of one core.\n{cores}"
    )
    print(report)
    (results_dir / ("quick.md" if options.quick else "latest.md")).write_text(report)


if __name__ == "__main__":
    main()
