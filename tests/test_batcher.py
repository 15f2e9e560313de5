"""The authentication batcher, with real threads and no database."""

from __future__ import annotations

import asyncio
import threading

import pytest
from waiting import eventually, units

from wsserver.database import Batcher


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, arguments: list[int]) -> list[int]:
        self.batches.append(arguments)
        self.release.wait(units(5))
        if -1 in arguments:
            raise RuntimeError("boom")
        return [argument * 10 for argument in arguments]


async def running(recorder: Recorder, *batches: list[int]) -> None:
    """Wait until the recorder was called with ``batches`` (it holds the
    thread until released): by then, the calls started with the first are
    queued in the batcher."""
    await eventually(lambda: recorder.batches == list(batches), 5, f"batches {batches}")


class Threads:
    """Database.run without Django: the function runs in a thread."""

    async def run(self, function, *args):
        return await asyncio.to_thread(function, *args)


@pytest.fixture
def database():
    return Threads()


async def test_a_lone_call_runs_at_once(database):
    recorder = Recorder()
    recorder.release.set()
    batcher = Batcher(database, recorder, concurrency=1)
    assert await batcher.call(4) == 40
    assert recorder.batches == [[4]]


async def test_calls_waiting_for_a_thread_are_batched(database):
    recorder = Recorder()
    batcher = Batcher(database, recorder, concurrency=1, max_batch=3)
    calls = [asyncio.ensure_future(batcher.call(n)) for n in range(6)]
    await running(recorder, [0])
    recorder.release.set()
    assert await asyncio.gather(*calls) == [n * 10 for n in range(6)]
    assert recorder.batches == [[0], [1, 2, 3], [4, 5]]


async def test_an_error_reaches_every_call_of_its_batch(database):
    recorder = Recorder()
    batcher = Batcher(database, recorder, concurrency=1)
    first = asyncio.ensure_future(batcher.call(1))
    failing = [asyncio.ensure_future(batcher.call(n)) for n in (2, -1)]
    await running(recorder, [1])
    recorder.release.set()
    assert await first == 10
    for call in failing:
        with pytest.raises(RuntimeError, match="boom"):
            await call
    assert await batcher.call(3) == 30  # it goes on


async def test_abandoned_calls_are_skipped(database):
    recorder = Recorder()
    batcher = Batcher(database, recorder, concurrency=1)
    first = asyncio.ensure_future(batcher.call(1))
    await running(recorder, [1])  # holding the only thread
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await batcher.call(2)
    recorder.release.set()
    assert await first == 10
    assert await batcher.call(3) == 30
    assert recorder.batches == [[1], [3]]


async def test_a_wrong_number_of_results_fails_every_call_of_its_batch(database):
    """No caller may get another's result, nor wait for one that never comes."""
    batcher = Batcher(database, lambda arguments: arguments[1:], concurrency=1)
    calls = [asyncio.ensure_future(batcher.call(n)) for n in range(3)]
    async with asyncio.timeout(units(2)):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(result) for result in results] == [RuntimeError] * 3
    assert "results for a batch of" in str(results[0])


async def test_calls_whose_caller_gave_up_do_not_pile_up_behind_a_stuck_thread():
    recorder = Recorder()
    batcher = Batcher(Threads(), recorder, concurrency=1)
    first = asyncio.ensure_future(batcher.call(0))
    await running(recorder, [0])
    for _wave in range(5):  # callers that time out, again and again
        waiting = [asyncio.ensure_future(batcher.call(n)) for n in range(1, 201)]
        await asyncio.sleep(0)
        assert batcher.queued == 200
        for call in waiting:
            call.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert batcher.queued == 0
        assert len(batcher._pending) <= 200
    alive = asyncio.ensure_future(batcher.call(7))
    await asyncio.sleep(0)
    assert batcher.queued == 1
    recorder.release.set()
    assert await first == 0 and await alive == 70
    assert recorder.batches == [[0], [7]]
