"""Reading what a subscriber missed from the history (see wsserver.catchup).

The I/O half of catching up, shared by the one-channel subscriber
(:mod:`wsserver.bus`, plain Redis or Sentinel) and the Redis Cluster one
(:mod:`wsserver.shards`, a stream per partition).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable

from .catchup import Catchup
from .counters import Counters
from .history import Entry, History

__all__ = ["ChannelBackfill", "catch_up"]

logger = logging.getLogger("wsserver.bus")


async def start(
    history: History,
    catchup: Catchup,
    stream: Hashable,
    since: tuple[int, int] | None = None,
) -> None:
    """Before the first subscription: follow the stream from its newest entry
    (or from ``since``, a time as a stream id, if earlier), so that what is
    published until the subscription is up is read from it."""
    if catchup.position(stream) is None:
        newest = await history.newest()
        catchup.follow(stream, newest if since is None else min(newest, since))


async def catch_up(
    history: History,
    catchup: Catchup,
    stream: Hashable,
    *,
    send: Callable[[Hashable, list[Entry]], None],
    on_gap: Callable[[Hashable, str], None],
    counters: Counters,
    before_send: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Once subscribed: send what the stream has after the last event passed
    on, or report a gap if it no longer reaches back that far.
    ``before_send``: awaited before each chunk (access changes under way are
    applied first)."""
    position = catchup.position(stream)
    assert position is not None
    gap, replay, rewound = await history.after(position)
    if rewound is not None:
        logger.warning(
            "%s lost entries that were sent already (a failover to a replica "
            "that had not received them): following it from its newest",
            history.key,
        )
        catchup.rewind(stream, rewound)
    elif gap or catchup.overflowed(stream):
        counters.bus_gaps += 1
        logger.warning(
            "%s no longer has the events missed after %d-%d: the connections "
            "that follow it are sent resume_gap",
            history.key,
            *position,
        )
        on_gap(stream, f"{history.id_prefix}{position[0]}-{position[1]}")
        catchup.jump(stream, await history.newest())
    else:
        async for entries in history.entries(replay):
            if before_send is not None:
                await before_send()
            counters.bus_backfilled += len(entries)
            send(stream, entries)


class ChannelBackfill:
    """The one channel's catching up, for :class:`wsserver.bus.Subscriber`."""

    def __init__(
        self,
        history: History,
        catchup: Catchup,
        *,
        send: Callable[[Hashable, list[Entry]], None],
        on_gap: Callable[[Hashable, str], None],
        counters: Counters,
    ) -> None:
        self.history = history
        self.catchup = catchup
        self.send = send
        self.on_gap = on_gap
        self.counters = counters

    async def start(self) -> None:
        await start(self.history, self.catchup, None)

    async def backfill(self) -> None:
        await catch_up(
            self.history,
            self.catchup,
            None,
            send=self.send,
            on_gap=self.on_gap,
            counters=self.counters,
        )
