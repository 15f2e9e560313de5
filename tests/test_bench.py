"""The benchmark still runs end to end (small), so that `make bench` keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_every_server_and_delivers_everything(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--clients=300",
            "--seconds=1",
            "--burst=10",
            "--concurrency=100",
            "--workers=2",
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
        "wsserver-1-unpinned",
        "wsserver-2-unpinned",
    }
    for server, result in numbers.items():
        assert result["connections"] == 300, server
        for phase in ("steady", "burst"):
            delivered = result[phase]["delivered"]
            assert delivered == result[phase]["expected"] > 0, (server, phase)
            assert result[phase]["p99_ms"] is not None, (server, phase)
        assert result["storm_s"] > 0, server
    assert numbers["wsserver"]["round_trips_per_auth"] <= 1
    table = (tmp_path / "latest.md").read_text()
    assert "| KiB RSS per idle connection |" in table
    assert "WS_WORKERS=2" in table
