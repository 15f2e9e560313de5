"""What the sidecar counts: one object, incremented where things happen.

Every component is handed the process's :class:`Counters` and adds to it
with plain integer arithmetic, which costs nothing on the hot paths;
:mod:`wsserver.metrics` reads it when ``/metrics`` is scraped. Gauges (open
connections, subscription state) are not counted: metrics reads them from
the components that hold that state.
"""

from __future__ import annotations

import dataclasses
from collections import Counter as Tally

__all__ = ["Counters"]


@dataclasses.dataclass(slots=True)
class Counters:
    """Totals since the process started, by what /metrics reports."""

    # wsserver_authentications{result}: success, failure, timeout,
    # unavailable, limited.
    authentications: Tally[str] = dataclasses.field(default_factory=Tally)
    # wsserver_bus_events{outcome}: routed, invalid.
    bus_events: Tally[str] = dataclasses.field(default_factory=Tally)
    # wsserver_handshakes_refused{reason}.
    handshakes_refused: Tally[str] = dataclasses.field(default_factory=Tally)
    # wsserver_task_restarts{task}.
    task_restarts: Tally[str] = dataclasses.field(default_factory=Tally)
    # One per event and recipient written to.
    deliveries: int = 0
    # Database round trips of batched authentications.
    authentication_queries: int = 0
    # Closed with 1013 (pending output past WS_MAX_BUFFER) or aborted
    # (output stalled for WS_PING_TIMEOUT).
    slow_client_closes: int = 0
    revocations: int = 0
    bus_reconnects: int = 0
    # Events read from history after a subscription came back (or began).
    bus_backfilled: int = 0
    # Subscriptions that came back too late for history: resume_gap sent.
    bus_gaps: int = 0
    # Live events dropped because a backfill had sent them already.
    bus_duplicates: int = 0
    gc_full_collections: int = 0
    gc_full_collection_seconds: float = 0.0
