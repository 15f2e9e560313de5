"""Background tasks that crash are restarted, not left dead."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from wsserver.supervision import supervised


async def test_a_crashed_task_is_restarted_and_counted(caplog):
    runs = []

    async def flaky():
        runs.append(len(runs))
        if len(runs) < 3:
            raise ValueError(f"crash {len(runs)}")

    restarts = Counter()
    await asyncio.wait_for(supervised("subscriber", flaky, restarts, delay=0), 2)
    assert runs == [0, 1, 2]
    assert restarts == {"subscriber": 2}
    assert "The subscriber task crashed: restarting it" in caplog.text
    assert "crash 2" in caplog.text


async def test_cancellation_is_not_a_crash():
    async def forever():
        await asyncio.sleep(3600)

    restarts = Counter()
    task = asyncio.create_task(supervised("keepalive", forever, restarts))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert restarts == {}
