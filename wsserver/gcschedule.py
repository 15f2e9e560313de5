"""Garbage collection for many long-lived connections.

CPython's cyclic collector runs a full collection each time the objects it
tracks grow by a quarter, and each connection is about 75 tracked objects: at
10,000 connections a full collection scans some 800,000 objects and stops the
event loop for half a second, and a ramp from 0 to 10,000 connections set off
about twenty of them, a quarter of the CPU time of authentication.

So the objects of open connections are frozen (:func:`gc.freeze`: collections
skip them) as connections open and authenticate, and a full collection runs
only once the connections closed since the previous one reach a quarter of
those open, a second after it is due so that a mass disconnection costs one.
Closed connections leave reference cycles (asyncio's transport, websockets'
parser) that only a full collection frees: memory stays bounded.

:class:`CollectionSchedule` decides, with plain counters; :class:`GcScheduler`
applies its decisions to the :mod:`gc` module.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from .counters import Counters

__all__ = ["CollectionSchedule", "GcScheduler"]

logger = logging.getLogger("wsserver.gcschedule")


class CollectionSchedule:
    """When to freeze survivors and when to run a full collection.

    ``freeze_every``: connections opened, authenticated or closed between
    two freezes; meanwhile collections scan at most their objects. Each step
    allocates objects that last: a reconnection storm opens connections
    faster than they authenticate, and what a closing connection allocates
    hangs off its frozen objects, where collections would scan it again and
    again without freeing it.

    A full collection is due when the connections closed since the last one
    reach ``collect_fraction`` of the open ones and ``collect_minimum``.
    """

    def __init__(
        self,
        *,
        freeze_every: int = 256,
        collect_fraction: float = 0.25,
        collect_minimum: int = 1000,
    ) -> None:
        if freeze_every < 1 or collect_minimum < 1 or collect_fraction <= 0:
            raise ValueError("freeze_every, collect_minimum and collect_fraction > 0")
        self.freeze_every = freeze_every
        self.collect_fraction = collect_fraction
        self.collect_minimum = collect_minimum
        self.changes_since_freeze = 0
        self.closed_since_collection = 0

    def opened(self) -> bool:
        """Count a connection opened or authenticated; True when to freeze now."""
        return self._changed()

    def closed(self) -> bool:
        """Count a closed connection; True when to freeze now."""
        self.closed_since_collection += 1
        return self._changed()

    def collection_due(self, open_connections: int) -> bool:
        due = max(self.collect_minimum, open_connections * self.collect_fraction)
        return self.closed_since_collection >= due

    def collected(self) -> None:
        """A full collection ran (and froze what remains): count again."""
        self.closed_since_collection = 0
        self.changes_since_freeze = 0

    def _changed(self) -> bool:
        self.changes_since_freeze += 1
        if self.changes_since_freeze < self.freeze_every:
            return False
        self.changes_since_freeze = 0
        return True


class GcScheduler:
    """Apply a :class:`CollectionSchedule` to the process' garbage collector
    (not to be confused with Prometheus' collectors, see wsserver.metrics)."""

    def __init__(
        self,
        schedule: CollectionSchedule | None = None,
        *,
        delay: float = 1.0,
        counters: Counters | None = None,
    ) -> None:
        self.schedule = schedule or CollectionSchedule()
        self.delay = delay
        self.counters = Counters() if counters is None else counters
        self.freezes = 0
        # Objects collections skip, as counted at start-up and after each
        # full collection (those frozen since are not counted yet).
        self.frozen_objects = 0
        self._due: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Freeze what start-up left: modules, settings, the user model."""
        gc.collect()
        self.freeze()
        self.frozen_objects = gc.get_freeze_count()

    def opened(self) -> None:
        if self.schedule.opened():
            self.freeze()

    def closed(self, open_connections: int) -> None:
        """Count a closure; when a full collection is due, run it shortly."""
        if self.schedule.closed():
            self.freeze()
        if self._due is None and self.schedule.collection_due(open_connections):
            loop = asyncio.get_running_loop()
            self._due = loop.call_later(self.delay, self.collect)

    def stop(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None

    def freeze(self) -> None:
        gc.freeze()
        self.freezes += 1

    def collect(self) -> None:
        """Free what closed connections left, then freeze what remains."""
        self._due = None
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        # Counting walks every frozen object: only here, where the collection
        # has just walked them all anyway, never when metrics are scraped.
        self.frozen_objects = gc.get_freeze_count()
        elapsed = time.perf_counter() - started
        self.schedule.collected()
        self.counters.gc_full_collections += 1
        self.counters.gc_full_collection_seconds += elapsed
        logger.debug("Full collection: %d objects freed in %.3f s", found, elapsed)
