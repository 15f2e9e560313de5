"""Database calls off the event loop, on connections kept healthy for months.

Django recycles connections at the start and end of each HTTP request; a
long-running process outside the request cycle must do it itself, or a
connection broken by a database restart stays broken forever. Each call runs
in a small fixed pool of threads (one connection each) between two calls to
``close_old_connections()``, which with CONN_HEALTH_CHECKS and CONN_MAX_AGE
replaces dead and old connections just as a request would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

from django.db import close_old_connections
from django.db.utils import InterfaceError, OperationalError

from .counters import Counters

__all__ = ["OUTAGES", "Batcher", "Database", "DatabaseUnavailable"]

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


# Django's errors for "the database cannot answer": a refused or broken
# connection, a timeout. Any other database error is about one query.
OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


class DatabaseUnavailable(Exception):
    """The database could not be reached; the client should try again later."""


class Database:
    """Run synchronous Django code in worker threads."""

    def __init__(self, threads: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="wsserver-db"
        )

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``func`` in a worker thread; its connection is recycled as in a request.

        Raises DatabaseUnavailable when the database cannot answer; other errors
        propagate as they are.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(_call, func, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop the threads without waiting; calls not started yet are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _call(func: Callable[..., T], *args: object, **kwargs: object) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    except OUTAGES as exc:
        if not unavailable(exc):
            raise
        raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc
    finally:
        close_old_connections()


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means it cannot answer now (an outage).

    MySQL reports a missing GRANT as an OperationalError too: that is a
    configuration to fix (refused with 1011, logged), not an outage to wait
    out with 1013.
    """
    from .schema import permission_denied

    return isinstance(exc, OUTAGES) and not permission_denied(exc)


class Batcher(Generic[A, T]):
    """Group calls that wait for a database thread into one call for all.

    ``function`` takes a list of arguments and returns a list of results in
    the same order. With a thread free, a call runs alone at once; when every
    thread is busy, calls queue up and the next free thread takes them all
    (up to ``max_batch``). Latency stays low when idle and throughput grows
    under load, e.g. during a reconnection storm.
    """

    def __init__(
        self,
        database: Database,
        function: Callable[[list[A]], list[T]],
        *,
        concurrency: int,
        max_batch: int = 500,
        counters: Counters | None = None,
    ) -> None:
        self.database = database
        self.function = function
        self.concurrency = concurrency
        self.max_batch = max_batch
        # Each batch is one authentication query (wsserver_authentication_queries).
        self.counters = Counters() if counters is None else counters
        self._pending: list[tuple[A, asyncio.Future[T]]] = []
        self._given_up = 0  # calls in _pending whose caller gave up, about
        self._running = 0
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def queued(self) -> int:
        """Calls waiting for a thread whose caller still waits."""
        return sum(1 for _, future in self._pending if not future.done())

    async def call(self, argument: A) -> T:
        """``function``'s result for one argument, computed alone or in a batch."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((argument, future))
        self._start()
        try:
            return await future
        except asyncio.CancelledError:  # the caller gave up (a timeout)
            self._given_up += 1
            if self._given_up > len(self._pending) // 2:
                # While every thread is stuck (a database that hangs), callers
                # that time out would otherwise pile up until one is free.
                self._pending = [p for p in self._pending if not p[1].done()]
                self._given_up = 0
            raise

    def _start(self) -> None:
        while self._pending and self._running < self.concurrency:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            # Calls whose caller gave up (a timeout) need no work.
            batch = [(argument, f) for argument, f in batch if not f.done()]
            if not batch:
                continue
            self._running += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[A, asyncio.Future[T]]]) -> None:
        self.counters.authentication_queries += 1
        try:
            results = await self.database.run(self.function, [a for a, _ in batch])
            if len(results) != len(batch):
                # Matching them up would give some callers another's result.
                raise RuntimeError(
                    f"{len(results)} results for a batch of {len(batch)} calls"
                )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._running -= 1
            self._start()
