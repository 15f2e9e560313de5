"""Prometheus metrics, read from the server's own counters when scraped.

The hot paths (fan-out, routing) only increment plain integers; this
collector turns them into Prometheus families at scrape time, so metrics
cost nothing per delivery. Only the publication delay is a histogram,
observed once per event.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .events import event_id_key

if TYPE_CHECKING:
    from .server import Sidecar

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """What the sidecar counts; one instance per process."""

    def __init__(self) -> None:
        self.authentications: Tally[str] = Tally()
        self.events: Tally[str] = Tally()
        self.handshakes_refused: Tally[str] = Tally()
        self.task_restarts: Tally[str] = Tally()
        self.revocations = 0
        self.registry = CollectorRegistry()
        self.delay = Histogram(
            "wsserver_event_delay_seconds",
            "Delay from an event's publication (the time in its id) to its "
            "broadcast by this process.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def observe_delay(self, event_id: str | None, now: Callable[[], float] = time.time):
        """Record publication-to-broadcast delay; ids carry Redis' clock in ms."""
        key = event_id_key(event_id)
        if key is not None:
            self.delay.observe(max(0.0, now() - key[0] / 1000))

    def register(self, sidecar: Sidecar) -> None:
        self.registry.register(_SidecarCollector(sidecar, self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SidecarCollector(Collector):
    def __init__(self, sidecar: Sidecar, metrics: Metrics) -> None:
        self.sidecar = sidecar
        self.metrics = metrics

    def collect(self) -> Iterator:
        sidecar, metrics = self.sidecar, self.metrics
        yield GaugeMetricFamily(
            "wsserver_connections",
            "Open authenticated connections.",
            value=len(sidecar.router),
        )
        yield GaugeMetricFamily(
            "wsserver_connected_users",
            "Users with at least one open connection.",
            value=len(sidecar.router.users()),
        )
        authentications = CounterMetricFamily(
            "wsserver_authentications",
            "Authentication attempts by result.",
            labels=["result"],
        )
        for result in ("success", "failure", "timeout", "unavailable", "limited"):
            authentications.add_metric([result], metrics.authentications[result])
        yield authentications
        events = CounterMetricFamily(
            "wsserver_bus_events",
            "Messages received from the Redis channel, by outcome.",
            labels=["outcome"],
        )
        events.add_metric(["routed"], metrics.events["routed"])
        # Messages whose handler failed were skipped too (see wsserver.bus).
        invalid = metrics.events["invalid"] + sidecar.subscriber.handler_errors
        events.add_metric(["invalid"], invalid)
        yield events
        yield GaugeMetricFamily(
            "wsserver_authenticating",
            "Connections whose handshake is done and whose token is not decided "
            "yet (limited by WS_MAX_AUTHENTICATING).",
            value=len(sidecar.admission),
        )
        refused = CounterMetricFamily(
            "wsserver_handshakes_refused",
            "Handshakes refused with HTTP 503, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(metrics.handshakes_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        restarts = CounterMetricFamily(
            "wsserver_task_restarts",
            "Background tasks (subscriber, keepalive, rechecks) restarted after "
            "a crash.",
            labels=["task"],
        )
        for task, count in sorted(metrics.task_restarts.items()):
            restarts.add_metric([task], count)
        yield restarts
        yield CounterMetricFamily(
            "wsserver_deliveries",
            "Events delivered to connections (one per event and recipient).",
            value=sidecar.fanout.deliveries,
        )
        yield CounterMetricFamily(
            "wsserver_authentication_queries",
            "Batches of authentications, each one database round trip (two when "
            "SESAME_PRIMARY_KEY_FIELD is not the primary key); under load one "
            "serves many connections.",
            value=sidecar.authentications.batches,
        )
        yield CounterMetricFamily(
            "wsserver_slow_client_closes",
            "Connections closed because their pending output passed WS_MAX_BUFFER.",
            value=sidecar.slow_closes,
        )
        yield CounterMetricFamily(
            "wsserver_revocations",
            "Connections closed because their user's access was revoked.",
            value=metrics.revocations,
        )
        yield CounterMetricFamily(
            "wsserver_bus_reconnects",
            "Attempts to reconnect to Redis after a failure.",
            value=sidecar.subscriber.reconnects,
        )
        collector = sidecar.collector
        yield CounterMetricFamily(
            "wsserver_gc_full_collections",
            "Full garbage collections, run once enough connections have closed "
            "(see wsserver.collector).",
            value=collector.collections,
        )
        yield CounterMetricFamily(
            "wsserver_gc_full_collection_seconds",
            "Time spent in those full collections (the event loop waits).",
            value=collector.collection_seconds,
        )
        yield GaugeMetricFamily(
            "wsserver_gc_frozen_objects",
            "Objects the garbage collector skips (those of long-lived "
            "connections), counted after the last full collection: counting "
            "walks them all.",
            value=collector.frozen_objects,
        )
        yield GaugeMetricFamily(
            "wsserver_bus_subscribed",
            "1 while subscribed to the Redis channel.",
            value=int(sidecar.subscriber.subscribed),
        )
