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
import datetime
import json
import os
import platform
import statistics
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
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def family(pid: int) -> list[int]:
    """A process and its children (WS_WORKERS)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return (
        [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (workers)."""
    total = 0.0
    for each in family(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_bytes(pid: int) -> int:
    return sum(
        int(Path(f"/proc/{each}/statm").read_text().split()[1]) * PAGE
        for each in family(pid)
    )


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

    def __init__(self, kind: str, env: dict, plan_path: str, channel: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.channel = channel
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
            }
        elif kind == "baseline":
            command = [python, "bench/baseline.py", str(self.port), channel]
            env = {**env, "DJANGO_SETTINGS_MODULE": "settings_auth"}
        else:
            command = [python, "bench/floor.py", str(self.port), REDIS_URL, channel]
            command.append(plan_path)
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)
        self.wait(lambda: self.count() is not None, 30, "start")

    def count(self) -> int | None:
        path = "/metrics" if self.kind == "wsserver" else "/count"
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=5
            ) as response:
                text = response.read().decode()
        except OSError:
            return None
        if self.kind != "wsserver":
            return int(text)
        for line in text.splitlines():
            if line.startswith("wsserver_connections "):
                return int(float(line.split()[1]))
        return None

    def metric(self, name: str) -> float | None:
        if self.kind != "wsserver":
            return None
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

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
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Clients:
    """The load: client processes, each with a share of the tokens."""

    def __init__(self, tokens: list[str], processes: int) -> None:
        self.processes = []
        for index in range(processes):
            process = subprocess.Popen(
                [sys.executable, "bench/load.py"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
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


def run_server(kind, env, plan, plan_path, options) -> dict:
    channel = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    bus = redis.Redis.from_url(REDIS_URL)
    tokens = [entry["token"] for entry in plan]
    by_type: dict[int | None, int] = {}
    for entry in plan:
        by_type[entry["content_type_id"]] = by_type.get(entry["content_type_id"], 0) + 1
    content_types = sorted(ct for ct in by_type if ct is not None)
    n = len(tokens)
    log(f"== {kind}: starting")
    server = Server(kind, env, plan_path, channel)
    clients = Clients(tokens, options.load_processes)
    result = {"connections": n}
    try:
        time.sleep(0.5)
        rss_before = rss_bytes(server.process.pid)

        log(f"   {kind}: connecting {n} clients, {options.concurrency} at a time")
        cpu_before = cpu_seconds(server.process.pid)
        clients.start_connecting(
            server.port, options.concurrency // len(clients.processes)
        )
        seconds = server.wait(lambda: server.count() == n, 300, "authentication")
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
            cpu_start = cpu_seconds(server.process.pid)
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
            cpu = cpu_seconds(server.process.pid) - cpu_start
            latencies = sorted(x for s in stats for x in s["latencies"])
            return {
                "delivered": delivered,
                "expected": expected,
                "cpu_us_per_delivery": cpu / max(delivered, 1) * 1e6,
                "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000
                if latencies
                else None,
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
    finally:
        clients.stop()
        server.stop()
    return result


def table(results: dict, queries: dict, options) -> str:
    base, ws, floor = results["baseline"], results["wsserver"], results["floor"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

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
            "CPU µs per delivery (burst)",
            base["burst"]["cpu_us_per_delivery"],
            ws["burst"]["cpu_us_per_delivery"],
            floor["burst"]["cpu_us_per_delivery"],
            2,
        ),
        (
            "latency p50, ms",
            base["steady"]["p50_ms"],
            ws["steady"]["p50_ms"],
            floor["steady"]["p50_ms"],
            1,
        ),
        (
            "latency p99, ms",
            base["steady"]["p99_ms"],
            ws["steady"]["p99_ms"],
            floor["steady"]["p99_ms"],
            1,
        ),
        (
            "latency p99 in the burst, ms",
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
    load = max(
        r[p]["load_cpu_share"] for r in (base, ws, floor) for p in ("steady", "burst")
    )
    return "\n".join(lines), load


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 clients, short")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--servers", default="baseline,wsserver,floor")
    options = parser.parse_args()
    if options.quick:
        options.clients, options.seconds = 1000, 5.0

    env = {
        **os.environ,
        "SECRET_KEY": SECRET_KEY,
        "REDIS_URL": REDIS_URL,
        "SESAME_MAX_AGE": "86400",
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
        plan = json.loads(Path(plan_path).read_text())
        queries = json.loads(
            subprocess.run(
                [sys.executable, "bench/count_queries.py", plan_path],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        results = {}
        for kind in options.servers.split(","):
            results[kind] = run_server(kind, env, plan, plan_path, options)

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / ("quick.json" if options.quick else "latest.json")).write_text(
        json.dumps({"results": results, "queries": queries}, indent=1, default=str)
    )
    if set(results) != {"baseline", "wsserver", "floor"}:
        print(json.dumps(results, indent=1, default=str))
        return
    rendered, load = table(results, queries, options)
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    command = "make bench" if not options.quick else "make bench ARGS=--quick"
    report = (
        f"Command: `{command}` ({' '.join(sys.argv[1:]) or 'defaults'}); "
        f"{options.clients:,} clients, {options.rate:g} events/s for "
        f"{options.seconds:g} s, bursts of {options.burst}; "
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}.\n\n{rendered}\n\n"
        f"Load generator CPU (all client processes, busiest phase): "
        f"{load:.0%} of one core.\n"
    )
    print(report)
    (results_dir / ("quick.md" if options.quick else "latest.md")).write_text(report)


if __name__ == "__main__":
    main()
