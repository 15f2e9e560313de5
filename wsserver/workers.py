"""``WS_WORKERS``: several server processes on one port, one per core.

The kernel spreads new connections over processes that listen with
SO_REUSEPORT. Each worker is a complete sidecar with its own Redis
subscription and database connections; nothing is shared between them, so
they scale like separate machines behind a load balancer. The parent only
forwards SIGTERM and SIGINT and waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable

__all__ = ["run_workers"]

logger = logging.getLogger("wsserver.workers")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def run_workers(
    count: int, target: Callable[[int], int], stop_timeout: float | None = None
) -> int:
    """Run ``target(n)`` in ``count`` forked processes; return the worst exit code.

    ``n`` numbers the workers from 0, for what must differ between them (the
    port of each one's metrics). Workers still running ``stop_timeout``
    seconds after they were told to stop are killed: a shutdown that hangs
    must not keep the service (and its port) alive.
    """
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_exit_with, args=(target, n), name=f"worker-{n}")
        for n in range(count)
    ]
    stop_deadline: float | None = None

    def forward(signum, frame):
        nonlocal stop_deadline
        if stop_deadline is None and stop_timeout is not None:
            stop_deadline = time.monotonic() + stop_timeout
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        # A stop signal that arrives while workers start waits until all of
        # them exist, then reaches each one: none is orphaned, and none runs
        # the parent's handler, which it inherits until it resets its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for worker in workers:
                worker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        logger.info(
            "Started %d workers: %s", count, ", ".join(str(w.pid) for w in workers)
        )
        exit_codes = []
        running = list(workers)
        while running:
            # Whichever worker ends first, not the first one started.
            timeout = (
                None
                if stop_deadline is None
                else max(0.0, stop_deadline - time.monotonic())
            )
            multiprocessing.connection.wait([w.sentinel for w in running], timeout)
            if stop_deadline is not None and time.monotonic() >= stop_deadline:
                for worker in running:
                    if worker.is_alive():
                        logger.error(
                            "Worker %d did not stop within %g s: killing it",
                            worker.pid,
                            stop_timeout,
                        )
                        worker.kill()
                        worker.join()
            for worker in [w for w in running if not w.is_alive()]:
                running.remove(worker)
                worker.join()
                exit_codes.append(worker.exitcode)
                if worker.exitcode != 0:
                    # One worker failed: stop the others, so that a supervisor
                    # restarts the whole service instead of running it short.
                    logger.error(
                        "Worker %d exited with %s", worker.pid, worker.exitcode
                    )
                    forward(signal.SIGTERM, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _worst(exit_codes)


def _worst(exit_codes: list[int | None]) -> int:
    """The first failure's exit status; a signal N counts as 128 + N, as in shells."""
    for code in exit_codes:
        if code:
            return code if code > 0 else 128 - code
    return 0


def _exit_with(target: Callable[[int], int], worker: int) -> None:
    # Stop signals reach each worker from the parent, not through its handler;
    # one sent while the workers started is delivered here, and stops it.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    raise SystemExit(target(worker))
