"""The benchmark still runs end to end (small), so that `make bench` keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_every_server_and_delivers_everything(tmp_path):
    """Every phase of every server, events with an audience included."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--clients=300",
            "--seconds=1",
            "--burst=10",
            "--concurrency=100",
            "--idle-seconds=1",
            "--light-seconds=1",
            "--workers=2",
            "--personal-seconds=0.5",
            "--personal-burst=300",
            f"--results={tmp_path}",
        ],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    numbers = json.loads((tmp_path / "latest.json").read_text())["results"]
    assert set(numbers) == {
        "baseline",
        "wsserver",
        "floor",
        "nchan",
        "wsserver-1-unpinned",
        "wsserver-2-unpinned",
    }
    table = (tmp_path / "latest.md").read_text()
    if "skipped" in numbers["nchan"]:  # not installed, and not installable here
        assert "nchan: not measured:" in table
        del numbers["nchan"]
    for server, result in numbers.items():
        assert result["connections"] == 300, server
        phases = ["steady", "burst"]
        if not server.endswith("-unpinned"):
            phases.append("light")
            assert result["idle"]["cpu_ms_per_s"] >= 0, server
            assert result["idle"]["lost"] == 0, server
        for phase in phases:
            delivered = result[phase]["delivered"]
            assert delivered == result[phase]["expected"] > 0, (server, phase)
            assert result[phase]["p99_ms"] is not None, (server, phase)
        assert result["storm_s"] > 0, server
        # Events with an audience: wsserver and the floor only (the guide's
        # server and Nchan route content types).
        audiences = ["group", "permission", "personal", "personal_burst"]
        if server not in ("wsserver", "floor"):
            assert not set(audiences) & set(result), server
            continue
        for phase in audiences:
            delivered = result[phase]["delivered"]
            assert delivered == result[phase]["expected"] > 0, (server, phase)
            assert result[phase]["events_per_s"] > 0, (server, phase)
        assert result["personal"]["expected"] == 2500  # 5,000/s for 0.5 s
        assert result["personal_burst"]["expected"] == 300  # one per user
        # 30% of the users each, so 90 per event, 20 events.
        assert result["group"]["expected"] == result["permission"]["expected"] == 1800
    assert numbers["wsserver"]["round_trips_per_auth"] <= 1
    assert "| KiB RSS per idle connection |" in table
    assert "| idle CPU, ms per second (no events) |" in table
    assert "| CPU µs per delivery (5 ev/s) |" in table
    assert "WS_WORKERS=2" in table
    assert "| CPU µs per delivery, group events (20 ev/s) |" in table
    assert "| CPU µs per delivery, permission events (20 ev/s) |" in table
    assert "| CPU µs per personal event (5,000 ev/s) |" in table
    assert "| personal events/s (300 at once) |" in table
    assert "A personal event costs wsserver" in table


def test_a_patched_wsserver_on_pythonpath_is_the_one_the_benchmark_runs(tmp_path):
    """PYTHONPATH wins over the checkout (the server runs with ``python -P``)."""
    from bench import __main__ as bench

    (tmp_path / "wsserver").mkdir()
    (tmp_path / "wsserver" / "__init__.py").write_text("")
    patched = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert bench.wsserver_source(patched) == str(tmp_path / "wsserver/__init__.py")
    unpatched = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert bench.wsserver_source(unpatched) == str(ROOT / "wsserver/__init__.py")


def test_loopback_steering_is_undone_whatever_happens(tmp_path, monkeypatch):
    from bench import __main__ as bench

    rps_cpus = tmp_path / "rps_cpus"
    rps_cpus.write_text("0\n")
    monkeypatch.setattr(bench, "LOOPBACK_RPS_CPUS", rps_cpus)
    with pytest.raises(RuntimeError), bench.loopback_receive_on({1, 3}):
        assert rps_cpus.read_text() == "a"  # CPUs 1 and 3
        raise RuntimeError
    assert rps_cpus.read_text() == "0"


def test_steering_without_pinning_is_refused_before_anything_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--receive-on-load-cpus", "--no-pin"],
        cwd=ROOT,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--receive-on-load-cpus needs pinning" in result.stderr


def test_the_cluster_benchmark_compares_one_redis_with_a_cluster(tmp_path):
    """bench.cluster, small: with 4 sidecars on one Redis each receives every
    event; on a Cluster, each receives only its users' personal events."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cluster",
            "--sidecars=1,4",
            "--users=200",
            "--groups=4",
            "--events=100",
            f"--out={tmp_path}",
        ],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    results = json.loads((tmp_path / "cluster.json").read_text())
    by = {(r["mode"], r["sidecars"]): r for r in results}
    assert by["plain", 4]["personal_per_sidecar_per_event"] == 1.0
    assert by["plain", 4]["group_per_sidecar_per_event"] == 1.0
    # 200 users over 2**20 user partitions: no two share one.
    assert by["sharded", 4]["personal_sidecars_per_event"] == 1.0
    assert by["sharded", 4]["personal_per_sidecar_per_event"] == 0.25
    # Every sidecar has members of every group.
    assert by["sharded", 4]["group_per_sidecar_per_event"] == 1.0
    assert (tmp_path / "cluster.md").read_text().startswith("# Bus traffic")
