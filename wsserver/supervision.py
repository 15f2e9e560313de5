"""Background tasks that are restarted when they crash.

The subscriber, the keepalive loop and the periodic rechecks must run as
long as the process does: a bug that crashes one must not leave the process
serving without it (no events, no pings, no rechecks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["RESTART_DELAY", "cancel", "start_supervised", "supervised"]

logger = logging.getLogger("wsserver.server")

# A background task that crashed is restarted after this delay.
RESTART_DELAY = 1.0


async def supervised(
    name: str,
    run: Callable[[], Awaitable[None]],
    restarts: Tally[str],
    delay: float = RESTART_DELAY,
) -> None:
    """Run a background loop until it returns: if it crashes, log it, count
    it in ``restarts`` and start it again."""
    while True:
        try:
            await run()
        except Exception:
            restarts[name] += 1
            logger.exception("The %s task crashed: restarting it", name)
        else:
            return
        await asyncio.sleep(delay)


def start_supervised(
    loops: Mapping[str, Callable[[], Awaitable[None]]], restarts: Tally[str]
) -> list[asyncio.Task[None]]:
    """Start each background loop under :func:`supervised`, by name."""
    return [
        asyncio.create_task(supervised(name, run, restarts))
        for name, run in loops.items()
    ]


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until they are done."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
