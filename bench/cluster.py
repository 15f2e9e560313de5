"""``python -m bench.cluster``: bus traffic per sidecar, one Redis against a Cluster.

K sidecars (K = 1, 4, 16), each with a share of the users, are simulated by
K processes running wsserver's own subscribers: on one Redis the plain
pub/sub one (wsserver.bus: every sidecar receives every event), on a
3-master Redis Cluster the sharded one (wsserver.shards: each subscribes to
the partitions its users follow). The main site's publisher code
(wsserver.publisher.publishing.send) publishes personal events (one user
each) and group events. Measured: bus messages each sidecar receives per
event, by kind, and the Redis CPU time per event (all nodes), read from
INFO before and after. Writes bench/results/<date>/cluster.{md,json}.

Loopback only; throwaway Redis servers on free ports (tests/redisservers.py);
bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CHANNEL = "bench-cluster"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# A simulated sidecar


def principals(users: list[str], groups: int):
    from wsserver.routing import Permissions, Principal

    return [
        Principal(
            user,
            f"user{user}",
            Permissions(),
            group_ids=frozenset([int(user) % groups]),
        )
        for user in users
    ]


async def worker(mode: str, url: str, users: list[str], groups: int) -> None:
    """Subscribe as a sidecar with these users would, count what arrives,
    print "ready", then the counts once stdin closes."""
    from wsserver.bus import Subscriber
    from wsserver.catchup import Catchup
    from wsserver.counters import Counters
    from wsserver.partitions import Interest
    from wsserver.redistarget import parse_redis
    from wsserver.shards import ShardedSubscriber

    counts = {"personal": 0, "group": 0, "other": 0}

    def on_message(payload: bytes, partition=None) -> None:
        if b'"event":"personal"' in payload:
            counts["personal"] += 1
        elif b'"event":"group"' in payload:
            counts["group"] += 1
        else:
            counts["other"] += 1

    counters = Counters()
    if mode == "sharded":
        interest = Interest()
        for principal in principals(users, groups):
            interest.add(principal)
        subscriber = ShardedSubscriber(
            parse_redis(url, cluster=True),
            CHANNEL,
            interest,
            Catchup(counters),
            on_message=on_message,
            on_backfill=lambda partition, entries: None,
            on_release=lambda partition: None,
            on_gap=lambda partition, position: None,
            on_control=lambda data: None,
            on_subscribed=None,
            history_limit=1000,
            counters=counters,
        )

        def ready() -> bool:
            return subscriber.subscribed
    else:
        subscriber = Subscriber(url, CHANNEL, on_message, counters=counters)

        def ready() -> bool:
            return subscriber.subscribed

    task = asyncio.create_task(subscriber.run())
    while not ready():
        await asyncio.sleep(0.05)
    partitions = len(subscriber.subscribed_partitions()) if mode == "sharded" else 1
    print(json.dumps({"ready": True, "subscriptions": partitions}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    print(json.dumps(counts), flush=True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# The run


def redis_cpu(ports: list[int]) -> dict[int, float]:
    import redis

    cpu = {}
    for port in ports:
        client = redis.Redis(port=port)
        info = client.info("cpu")
        client.close()
        cpu[port] = info["used_cpu_sys"] + info["used_cpu_user"]
    return cpu


def configure_publisher() -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.admin",
        ],
        DATABASES={},
        WSSERVER_CHANNEL=CHANNEL,
        WSSERVER_HISTORY_SIZE=1000,
    )
    django.setup()


def run_one(mode: str, url: str, ports: list[int], k: int, args) -> dict:
    from django.conf import settings

    from wsserver.audience import encode_audience
    from wsserver.publisher import publishing

    settings.WSSERVER_REDIS_URL = url
    settings.WSSERVER_REDIS_CLUSTER = mode == "sharded"
    publishing.reset_client()
    users = [str(n) for n in range(1, args.users + 1)]
    # Clients land on sidecars at random (a load balancer), whatever their
    # groups.
    shuffled = random.Random(0).sample(users, len(users))
    shares = [shuffled[i::k] for i in range(k)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.cluster",
                "worker",
                mode,
                url,
                ",".join(share),
                str(args.groups),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    subscriptions = []
    deadline = time.monotonic() + 120
    for process in workers:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"a {mode} worker did not get ready")
        subscriptions.append(json.loads(line)["subscriptions"])
    rng = random.Random(k)
    events = []
    for n in range(args.events):
        if n % 2:
            events.append(("group", {"groups": [rng.randrange(args.groups)]}))
        else:
            events.append(("personal", {"users": [rng.choice(users)]}))
    before = redis_cpu(ports)
    started = time.perf_counter()
    for kind, audience in events:
        publishing.send(
            [
                publishing.Outgoing(
                    {"event": kind, "data": None}, audience=encode_audience(**audience)
                )
            ]
        )
    elapsed = time.perf_counter() - started
    time.sleep(1.0)  # the last messages reach the workers
    after = redis_cpu(ports)
    counts = []
    for process in workers:
        out, _ = process.communicate("", timeout=60)
        counts.append(json.loads(out.strip().splitlines()[-1]))
    half = args.events / 2
    cpu = {port: after[port] - before[port] for port in ports}
    total_cpu = sum(cpu.values())
    return {
        "mode": mode,
        "sidecars": k,
        "users_per_sidecar": args.users // k,
        "subscriptions_per_sidecar": sum(subscriptions) / k,
        "personal_per_sidecar_per_event": sum(c["personal"] for c in counts) / k / half,
        "group_per_sidecar_per_event": sum(c["group"] for c in counts) / k / half,
        "personal_sidecars_per_event": sum(c["personal"] for c in counts) / half,
        "redis_cpu_us_per_event": total_cpu / args.events * 1e6,
        "busiest_node_share": max(cpu.values()) / total_cpu if total_cpu else 0.0,
        "publish_seconds": elapsed,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| Bus | Sidecars | Users each | Subscriptions each | Personal events "
        "received per sidecar | Group events received per sidecar | Sidecars "
        "receiving a personal event | Redis CPU per event (all nodes) | Busiest "
        "node's share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        bus = "one Redis, PUBLISH" if r["mode"] == "plain" else "Cluster, SPUBLISH"
        lines.append(
            f"| {bus} "
            f"| {r['sidecars']} | {r['users_per_sidecar']} "
            f"| {r['subscriptions_per_sidecar']:.0f} "
            f"| {r['personal_per_sidecar_per_event']:.3f} "
            f"| {r['group_per_sidecar_per_event']:.3f} "
            f"| {r['personal_sidecars_per_event']:.2f} "
            f"| {r['redis_cpu_us_per_event']:.0f} µs "
            f"| {r['busiest_node_share']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--sidecars", default="1,4,16")
    parser.add_argument("--users", type=int, default=4800)
    parser.add_argument("--groups", type=int, default=48)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from redisservers import RedisServer, redis_cluster

    configure_publisher()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = RedisServer(Path(tmp), "plain").start()
        try:
            with redis_cluster(Path(tmp), masters=3, replicas_per_master=0) as cluster:
                nodes = ",".join(f"127.0.0.1:{port}" for port in cluster.masters())
                for k in map(int, args.sidecars.split(",")):
                    for mode, url, ports in (
                        ("plain", f"redis://127.0.0.1:{plain.port}/0", [plain.port]),
                        ("sharded", f"redis://{nodes}", cluster.masters()),
                    ):
                        log(f"{mode}, {k} sidecars")
                        results.append(run_one(mode, url, ports, k, args))
                        log(json.dumps(results[-1]))
        finally:
            plain.stop()
    text = (
        f"# Bus traffic per sidecar ({datetime.date.today()}, "
        f"{os.cpu_count()} cores, {args.users} users in {args.groups} groups, "
        f"{args.events} events: half personal, half group)\n\n{table(results)}\n"
    )
    print(text)
    out = args.out or ROOT / "bench" / "results" / str(datetime.date.today())
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.md").write_text(text)
    (out / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        mode, url, users, groups = sys.argv[2:6]
        asyncio.run(worker(mode, url, users.split(","), int(groups)))
    else:
        sys.exit(main())
