"""Resuming: send a connection the events it missed, then live ones.

The I/O half of a resume; what it sends is decided by
:mod:`wsserver.delivery` and :mod:`wsserver.resume`. Live events are held
from before the history is read until the replay is done; those the replay
already included are dropped by id, so there is no gap and no duplicate.
Replayed events are filtered with the user's permissions as they are when
each batch is written. A resume waits only in its own connection's
coroutine: for its turn (``WS_MAX_REPLAYS``, ``WS_MAX_REPLAYS_PER_USER``)
and for the client to read each batch, all within ``WS_REPLAY_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from .audience import Audience
from .closes import CLIENT_TOO_SLOW, TRY_AGAIN_LATER
from .connection import SidecarConnection
from .delivery import Delivery
from .fanout import Fanout
from .history import (
    ClusterHistory,
    ClusterReplay,
    History,
    HistoryUnavailable,
    Replay,
)
from .limits import Slots
from .resume import Positions

__all__ = ["REPLAY_WRITE_SIZE", "Resuming"]

logger = logging.getLogger("wsserver.server")

# Bytes of missed events queued at once by a resume, before it waits for the
# client to read them.
REPLAY_WRITE_SIZE = 64 * 1024


class Resuming:
    """Run the resumes of one process."""

    def __init__(
        self,
        delivery: Delivery[SidecarConnection],
        fanout: Fanout,
        history: History | ClusterHistory,
        slots: Slots,
        *,
        timeout: float,
        disconnect: Callable[[SidecarConnection, tuple[int, str]], None],
        after_gap: Callable[[SidecarConnection], None] | None = None,
    ) -> None:
        self.delivery = delivery
        self.fanout = fanout
        self.history = history
        self.slots = slots
        self.timeout = timeout
        self.disconnect = disconnect
        self.after_gap = after_gap
        self.write_size = min(REPLAY_WRITE_SIZE, delivery.max_buffer // 2)

    async def __call__(
        self, connection: SidecarConnection, user_id: str, last_event_id: str
    ) -> None:
        """Send the events missed since ``last_event_id``, then live ones."""
        delivery = self.delivery
        delivery.hold(connection)
        try:
            async with asyncio.timeout(self.timeout):
                async with self.slots.taken(user_id):
                    if not connection.is_open:  # gone while it waited its turn
                        delivery.release(connection, None)
                        return
                    position = await self._replay(connection, last_event_id)
                    while held := self.fanout.take_held(connection, position):
                        missed = [(e.audience, e.payload, e.excluded) for e in held]
                        if not await self._send(connection, missed):
                            break
        except TimeoutError:
            stalled = connection.paused_at is not None
            logger.warning(
                "Connection %s: resume not done within WS_REPLAY_TIMEOUT (%s)",
                connection.id,
                "the client is not reading" if stalled else "waiting for its turn",
            )
            self.disconnect(connection, CLIENT_TOO_SLOW if stalled else TRY_AGAIN_LATER)
        except HistoryUnavailable:
            self.disconnect(connection, TRY_AGAIN_LATER)
        except BaseException:
            delivery.release(connection, None)
            raise
        else:
            delivery.release(connection, position)

    async def _replay(
        self, connection: SidecarConnection, last_event_id: str
    ) -> Positions | None:
        """Send the missed events the user may see now; return the position
        the replay covers (None: nothing was replayed)."""
        try:
            replay = await self.history.plan(
                last_event_id, self.delivery.router.principal(connection)
            )
        except HistoryUnavailable:
            replay = Replay(last_event_id, None, gap=True)
        if replay.gap:
            gap = {"type": "resume_gap", "last_event_id": last_event_id}
            self.fanout.write(connection, [json.dumps(gap).encode()])
            if self.after_gap is not None:
                self.after_gap(connection)  # a Redis Cluster's new cursor
            return None
        async for entries in self.history.entries(replay):  # type: ignore[arg-type]
            missed = [
                (entry.audience, entry.payload, entry.excluded)
                for entry in entries
                if entry.audience is not None
            ]
            if not await self._send(connection, missed):
                break
        else:
            if isinstance(replay, ClusterReplay) and replay.parts:
                # Where the replay leaves the client in each partition, before
                # the live events: its cursor is exact in every one of them.
                cursor = ",".join(
                    f"{partition}:{part.until}"
                    for partition, part in sorted(
                        replay.parts.items(), key=lambda item: str(item[0])
                    )
                )
                message = {"type": "cursor", "cursor": cursor}
                self.fanout.write(connection, [json.dumps(message).encode()])
        return replay.position

    async def _send(
        self,
        connection: SidecarConnection,
        events: list[tuple[Audience, bytes, Audience | None]],
    ) -> bool:
        """Write the batches the delivery core makes of these events, waiting
        for the client to read in between. False once the connection is
        closing or no longer registered (revoked, too slow)."""
        for batch in self.delivery.resume_batches(connection, events, self.write_size):
            if not self.fanout.write(connection, batch):
                return False
            if connection.paused_at is not None:
                try:
                    await connection.drain()
                except Exception:
                    return False
        return connection.is_open and connection in self.delivery.router
