"""Prometheus metrics, read from the process's counters when scraped.

The hot paths (fan-out, routing) only increment the plain integers of
:class:`~wsserver.counters.Counters`; they are turned into Prometheus
families at scrape time, so metrics cost nothing per delivery. Only the
publication delay is a histogram, observed once per event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .counters import Counters
from .events import event_id_key

__all__ = ["CONTENT_TYPE", "Gauges", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The labels reported even at zero.
RESULTS = ("success", "failure", "timeout", "unavailable", "limited")
OUTCOMES = ("routed", "invalid")


@dataclasses.dataclass(frozen=True, slots=True)
class Gauges:
    """What /metrics reads from the components that hold it, when scraped."""

    connections: Callable[[], int] = int
    connected_users: Callable[[], int] = int
    authenticating: Callable[[], int] = int
    authentications_queued: Callable[[], int] = int
    bus_subscribed: Callable[[], bool] = bool
    bus_partitions: Callable[[], int] = int
    gc_frozen_objects: Callable[[], int] = int


class Metrics:
    """The Prometheus view of a process: its counters and gauges."""

    def __init__(
        self, counters: Counters | None = None, gauges: Gauges | None = None
    ) -> None:
        counters = Counters() if counters is None else counters
        gauges = Gauges() if gauges is None else gauges
        self.counters = counters
        self.registry = CollectorRegistry()
        self.delay = Histogram(
            "wsserver_event_delay_seconds",
            "Delay from an event's publication (the time in its id) to its "
            "broadcast by this process.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.registry.register(_Families(counters, gauges))

    def observe_delay(
        self, event_id: str | None, now: Callable[[], float] = time.time
    ) -> None:
        """Record publication-to-broadcast delay; ids carry Redis' clock in ms."""
        key = event_id_key(event_id)
        if key is not None:
            self.delay.observe(max(0.0, now() - key[0] / 1000))

    def render(self) -> bytes:
        """The text exposition format, for a scrape."""
        return generate_latest(self.registry)


class _Families(Collector):
    """Prometheus' collector interface: metric families made at scrape time."""

    def __init__(self, counters: Counters, gauges: Gauges) -> None:
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator:
        counters, gauges = self.counters, self.gauges
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        for family, name, description, value in [
            (gauge, "connections", "Open authenticated connections.",
             gauges.connections()),
            (gauge, "connected_users", "Users with at least one open connection.",
             gauges.connected_users()),
            (gauge, "authenticating",
             "Connections whose handshake is done and whose token is not "
             "decided yet (limited by WS_MAX_AUTHENTICATING).",
             gauges.authenticating()),
            (gauge, "authentications_queued",
             "Tokens read and waiting for a database thread (WS_DB_THREADS), "
             "to be checked together in the next batch.",
             gauges.authentications_queued()),
            (counter, "deliveries",
             "Events delivered to connections (one per event and recipient).",
             counters.deliveries),
            (counter, "authentication_queries",
             "Batches of authentications, each one database round trip (two "
             "when SESAME_PRIMARY_KEY_FIELD is not the primary key); under "
             "load one serves many connections.",
             counters.authentication_queries),
            (counter, "slow_client_closes",
             "Connections closed because their pending output passed "
             "WS_MAX_BUFFER.",
             counters.slow_client_closes),
            (counter, "revocations",
             "Connections closed because their user's access was revoked.",
             counters.revocations),
            (counter, "bus_reconnects",
             "Attempts to reconnect to Redis after a failure.",
             counters.bus_reconnects),
            (counter, "bus_backfilled",
             "Events read from the history after a subscription came back.",
             counters.bus_backfilled),
            (counter, "bus_gaps",
             "Subscriptions that came back after their history was gone: "
             "their connections were sent resume_gap.",
             counters.bus_gaps),
            (counter, "bus_duplicates",
             "Live events dropped because the history had sent them.",
             counters.bus_duplicates),
            (counter, "gc_full_collections",
             "Full garbage collections, run once enough connections have "
             "closed (see wsserver.gcschedule).",
             counters.gc_full_collections),
            (counter, "gc_full_collection_seconds",
             "Time spent in those full collections (the event loop waits).",
             counters.gc_full_collection_seconds),
            (gauge, "gc_frozen_objects",
             "Objects the garbage collector skips (those of long-lived "
             "connections), counted after the last full collection: counting "
             "walks them all.",
             gauges.gc_frozen_objects()),
            (gauge, "bus_subscribed", "1 while subscribed to the Redis channel "
             "(on a Redis Cluster: to every partition wanted).",
             int(gauges.bus_subscribed())),
            (gauge, "bus_partitions",
             "Redis Cluster partitions subscribed to (0 on one Redis).",
             gauges.bus_partitions()),
        ]:  # fmt: skip
            yield family(f"wsserver_{name}", description, value=value)
        for name, description, label, values in [
            ("authentications", "Authentication attempts by result.", "result",
             {result: counters.authentications[result] for result in RESULTS}),
            # Messages whose handler failed are counted invalid (wsserver.bus).
            ("bus_events", "Messages received from the Redis channel, by outcome.",
             "outcome",
             {outcome: counters.bus_events[outcome] for outcome in OUTCOMES}),
            ("handshakes_refused", "Handshakes refused with HTTP 503, by reason.",
             "reason", dict(sorted(counters.handshakes_refused.items()))),
            ("task_restarts",
             "Background tasks (subscriber, keepalive, rechecks) restarted "
             "after a crash.",
             "task", dict(sorted(counters.task_restarts.items()))),
        ]:  # fmt: skip
            family = counter(f"wsserver_{name}", description, labels=[label])
            for key, count in values.items():
                family.add_metric([key], count)
            yield family
