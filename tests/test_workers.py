"""WS_WORKERS: several processes on one port, each delivering to its clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import pytest
import redis
from clients import authenticate, receive_event
from processes import SidecarProcess
from waiting import units

pytestmark = pytest.mark.e2e


async def test_two_workers_share_the_port_and_both_deliver(site, redis_url, tmp_path):
    sidecar = SidecarProcess.for_site(
        site, tmp_path, WS_WORKERS="2", WS_MAX_CONNECTIONS_PER_USER="100"
    ).start()
    try:
        # Wait until both workers are subscribed, then connect many clients.
        await sidecar.wait_logged("Subscribed to channel", 2, 30)
        token = site.token("admin")
        clients = await asyncio.gather(
            *[authenticate(sidecar.url, token) for _ in range(40)]
        )
        await sidecar.wait_logged(" opened for user ", 40, 10)
        redis.Redis.from_url(redis_url).publish(
            site.env["WSSERVER_CHANNEL"], json.dumps({"content_type_id": 1, "n": 1})
        )
        for websocket in clients:
            assert (await receive_event(websocket))["n"] == 1
        serving = set(re.findall(r"\[(\d+)\]: Connection \S+ opened", sidecar.log()))
        assert len(serving) == 2, sidecar.log()
        for websocket in clients:
            await websocket.close()
    finally:
        assert sidecar.stop() == 0
    assert sidecar.log().count("Shut down") == 2


def test_a_worker_that_dies_stops_the_others():
    """The parent notices any worker's death, not only the first one's."""
    import signal
    import time

    from wsserver.workers import run_workers

    def target(worker: int) -> int:
        if worker == 1:
            return 3  # fails at once
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        time.sleep(30)  # would outlive the test if not stopped
        return 0

    started = time.monotonic()
    assert run_workers(2, target) == 3
    assert time.monotonic() - started < units(10)


def test_a_worker_that_does_not_stop_is_killed():
    """A shutdown that hangs does not keep the service, and its port, alive."""
    import signal
    import subprocess
    import time

    script = """
import os, signal, sys, time
from wsserver.workers import run_workers

def target(worker):
    if worker == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # its shutdown hangs
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.write(1, b"ready\\n")  # one write: lines from two workers never mix
    time.sleep(60)
    return 0

sys.exit(run_workers(2, target, stop_timeout=1))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert [process.stdout.readline() for _ in range(2)] == ["ready\n"] * 2
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 128 + signal.SIGKILL
    assert time.monotonic() - started < units(5)
    assert "did not stop within 1 s: killing it" in process.stderr.read()


def test_a_stop_signal_while_workers_start_stops_them_all():
    """SIGTERM during start-up reaches every worker and orphans none."""
    import subprocess

    script = """
import os, signal, sys, time
from wsserver.workers import run_workers

def target(worker):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.write(1, b"%d\\n" % os.getpid())  # one write: lines never mix
    if worker == 0:
        os.kill(os.getppid(), signal.SIGTERM)  # while the others start
    time.sleep(60)
    return 0

sys.exit(run_workers(4, target))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    try:
        returncode = process.wait(20)
    finally:
        process.kill()
    # 0, or 143 for a worker stopped before it set its own handler: either way
    # the parent handled the signal instead of dying of it.
    assert returncode in (0, 128 + 15)
    worker_pids = [int(line) for line in process.stdout.read().split()]
    for pid in worker_pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        os.kill(pid, 9)
        raise AssertionError(f"worker {pid} outlived its parent")
