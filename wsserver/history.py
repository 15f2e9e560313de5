"""Read the events a resuming client missed from the Redis Stream.

The publisher appends every event to ``<channel>:history`` (bounded) and
publishes it, atomically. A client that sends a ``last_event_id`` gets the
entries after it, or is told that some were already trimmed (a gap).
"""

from __future__ import annotations

import dataclasses
import logging

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .events import event_id_key, with_id
from .logs import mask_url

__all__ = ["History", "HistoryUnavailable", "Missed"]

logger = logging.getLogger("wsserver.history")

CHUNK = 500


class HistoryUnavailable(Exception):
    """Redis could not be read: the client cannot be told what it missed."""


@dataclasses.dataclass(slots=True)
class Missed:
    """Events after a client's last one, oldest first, and whether some are lost."""

    events: list[tuple[str, bytes]]  # (id, payload with its "id")
    gap: bool


class History:
    def __init__(self, url: str, key: str, limit: int) -> None:
        self.url = url
        self.key = key
        self.limit = limit
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5
        )

    async def after(self, last_event_id: str) -> Missed:
        """The events after ``last_event_id``, at most ``limit`` of them."""
        last = event_id_key(last_event_id)
        assert last is not None
        try:
            try:
                info = await self._client.xinfo_stream(self.key)
            except ResponseError:  # no such key: no history at all
                return Missed([], gap=True)
            gap = _trimmed_after(info, last)
            events: list[tuple[str, bytes]] = []
            start = f"({last_event_id}"
            while not gap:
                entries = await self._client.xrange(self.key, start, "+", count=CHUNK)
                for entry_id, fields in entries:
                    event_id = entry_id.decode()
                    events.append((event_id, with_id(fields[b"event"], event_id)))
                if len(events) > self.limit:
                    # More than the history holds: tell the client to reload.
                    return Missed([], gap=True)
                if len(entries) < CHUNK:
                    break
                start = f"({entries[-1][0].decode()}"
        except (RedisError, OSError) as exc:
            logger.warning("History unavailable at %s: %s", mask_url(self.url), exc)
            raise HistoryUnavailable(str(exc)) from exc
        return Missed([] if gap else events, gap)

    async def close(self) -> None:
        await self._client.aclose()


def _trimmed_after(info: dict, last: tuple[int, int]) -> bool:
    """Whether entries after ``last`` may be missing from the stream.

    Trimming removes the oldest entries: while the client's last event is
    still in the stream, everything after it is too. Once it is gone, the
    next one may be gone as well, and the client is told (rarely needlessly).
    Entries deleted with XDEL show in ``max-deleted-entry-id`` (Redis 7).
    """
    deleted = event_id_key(_text(info.get("max-deleted-entry-id") or b"0-0"))
    if deleted is not None and deleted > last:
        return True
    first = info.get("first-entry")
    if first:
        first_key = event_id_key(_text(first[0]))
        return first_key is not None and first_key > last
    # An empty stream: gone only if something was added after ``last``.
    newest = event_id_key(_text(info.get("last-generated-id") or b"0-0"))
    return newest is not None and newest > last


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
