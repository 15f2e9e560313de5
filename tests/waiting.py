"""Waiting in tests: one time unit, one way to poll for a condition.

Every deadline in the tests is a number of time units: ``UNIT`` seconds each,
1 unless ``WSSERVER_TEST_TIME_UNIT`` says otherwise (e.g. ``3`` on a slow or
busy machine, which scales every deadline at once). Wait for a condition with
``wait_for()`` (sync) or ``eventually()`` (async), never with a fixed sleep; a
sleep is only right where time passing is the thing under test (``pause()``),
and then it says why.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

UNIT = float(os.environ.get("WSSERVER_TEST_TIME_UNIT", "1"))
INTERVAL = 0.05  # seconds between two checks

T = TypeVar("T")


def units(count: float) -> float:
    """``count`` time units, in seconds."""
    return count * UNIT


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    process=None,
    interval: float = INTERVAL,
) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    ``timeout`` is in time units. With ``process`` (a Popen), fail at once if
    it exits meanwhile.
    """
    deadline = time.monotonic() + units(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {units(timeout):g} s")
        time.sleep(interval)


async def eventually(
    predicate: Callable[[], T] | Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    interval: float = INTERVAL,
    in_thread: bool = True,
) -> T:
    """wait_for() for async tests: poll without blocking the event loop.

    A sync ``predicate`` runs in a thread (it may scrape metrics, query a
    database), unless ``in_thread`` is false: then it runs in the event loop,
    for a condition on objects of the test's own loop. An async one (e.g. an
    attempt to connect) is awaited.
    """
    deadline = time.monotonic() + units(timeout)
    while True:
        if inspect.iscoroutinefunction(predicate):
            value = await predicate()
        elif in_thread:
            value = await asyncio.to_thread(predicate)
        else:
            value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {units(timeout):g} s")
        await asyncio.sleep(interval)


def pause(count: float) -> None:
    """Let ``count`` time units pass, where time passing is under test."""
    time.sleep(units(count))


async def apause(count: float) -> None:
    """pause() for async tests."""
    await asyncio.sleep(units(count))
