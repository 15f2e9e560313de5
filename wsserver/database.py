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
from typing import ParamSpec, TypeVar

from django.db import close_old_connections
from django.db.utils import InterfaceError, OperationalError

__all__ = ["Database", "DatabaseUnavailable"]

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database could not be reached; the client should try again later."""


class Database:
    """Run synchronous Django code in worker threads."""

    def __init__(self, threads: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="wsserver-db"
        )

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(_call, func, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _call(func: Callable[..., T], *args: object, **kwargs: object) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc
    finally:
        close_old_connections()
