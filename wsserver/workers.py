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
from collections.abc import Callable

__all__ = ["run_workers"]

logger = logging.getLogger("wsserver.workers")


def run_workers(count: int, target: Callable[[int], int]) -> int:
    """Run ``target(n)`` in ``count`` forked processes; return the worst exit code.

    ``n`` numbers the workers from 0, for what must differ between them (the
    port of each one's metrics).
    """
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_exit_with, args=(target, n), name=f"worker-{n}")
        for n in range(count)
    ]
    for worker in workers:
        worker.start()
    logger.info("Started %d workers: %s", count, ", ".join(str(w.pid) for w in workers))

    def forward(signum, frame):
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    previous = {
        signum: signal.signal(signum, forward)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        exit_codes = []
        running = list(workers)
        while running:
            # Whichever worker ends first, not the first one started.
            multiprocessing.connection.wait([w.sentinel for w in running])
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
    return max((code or 0) for code in exit_codes) if exit_codes else 0


def _exit_with(target: Callable[[int], int], worker: int) -> None:
    # Signals reach the workers directly from the parent.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise SystemExit(target(worker))
