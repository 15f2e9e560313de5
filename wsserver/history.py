"""Read the events a resuming client missed from the Redis Stream.

The publisher appends every event to ``<channel>:history`` (bounded) and
publishes it, atomically, with the event's content type (field ``ct``) or
audience (field ``aud``, the event then being ``aevent``) beside it in the
entry, so that replayed events are filtered without parsing them. A client
that sends a ``last_event_id`` gets the entries after it, up to the newest
entry when the resume starts, read in chunks; or it is told that some are
gone (a gap), or that the id is unknown (one the stream never reached, e.g.
from before Redis lost its data: also a gap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .audience import Audience, InvalidAudience, parse_audience
from .cursors import InvalidCursor, cursor_since, cursor_starts, parse_cursor
from .events import (
    InvalidEvent,
    content_type_audience,
    event_id_key,
    parse_event,
    with_id,
)
from .logs import mask_url
from .partitions import Partition, routed

if TYPE_CHECKING:
    from .routing import Principal

__all__ = [
    "ClusterHistory",
    "ClusterReplay",
    "Entry",
    "History",
    "HistoryUnavailable",
    "Replay",
]

logger = logging.getLogger("wsserver.history")

CHUNK = 200

Position = tuple[int, int]


class HistoryUnavailable(Exception):
    """Redis could not be read: the client cannot be told what it missed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One missed event: its id, audience (None: invalid, never sent) and payload."""

    id: str
    audience: Audience | None
    payload: bytes  # with its "id", as live events have it
    # On a Redis Cluster: who in the audience takes it from another
    # partition's copy (see wsserver.partitions.routed).
    excluded: Audience | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """What a resume sends: the entries after ``after`` up to ``until``.

    ``until`` is the newest entry when the resume started: live events up to
    it are the replay's to send, later ones are live. None when nothing is
    replayed (a gap, or nothing was ever published).
    """

    after: str
    until: str | None
    gap: bool

    @property
    def position(self) -> Position | None:
        """``until`` as a comparable key (None when nothing is replayed)."""
        return None if self.until is None else event_id_key(self.until)


class History:
    """The channel's history stream: what a resume sends, and its entries."""

    def __init__(
        self,
        url: str,
        key: str,
        limit: int,
        *,
        client: Any = None,
        id_prefix: str = "",
    ) -> None:
        self.url = url
        self.key = key
        self.limit = limit
        # Before each entry's id: its partition's, on a Redis Cluster.
        self.id_prefix = id_prefix
        self.invalid_entries = 0
        self._client = (
            aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            if client is None
            else client
        )

    async def newest(self) -> Position:
        """The id of the newest entry ever added ((0, 0): none yet)."""
        try:
            info = await self._client.xinfo_stream(self.key)
        except ResponseError:  # no such key
            return (0, 0)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        newest = event_id_key(_text(info.get("last-generated-id") or b"0-0"))
        return (0, 0) if newest is None else newest

    async def after(self, position: Position) -> tuple[bool, Replay, Position | None]:
        """What a subscriber that last passed ``position`` on missed: whether
        some of it is gone (a gap), the replay of what is still there, and the
        stream's newest id if it is older than ``position`` (the stream lost
        entries the subscriber saw: a failover to a replica that had not
        received them), else None."""
        after = f"{position[0]}-{position[1]}"
        try:
            try:
                info = await self._client.xinfo_stream(self.key)
            except ResponseError:  # no such key: nothing was ever added
                return False, Replay(after, None, gap=False), None
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        newest = _text(info.get("last-generated-id") or b"0-0")
        newest_key = event_id_key(newest) or (0, 0)
        if newest_key < position:
            return False, Replay(after, None, gap=False), newest_key
        gap = _trimmed_after(info, position)
        return gap, Replay(after, newest, gap=gap), None

    async def plan(
        self,
        last_event_id: str,
        principal: Principal | None = None,
        *,
        exact: bool = True,
    ) -> Replay:
        """Decide what a client that last saw ``last_event_id`` is sent.

        ``exact``: the id is one the client received; else a time (see
        wsserver.cursors), which the stream may not have reached yet.
        """
        last = event_id_key(last_event_id)
        if last is None or ":" in last_event_id:
            # A Redis Cluster's cursor, or id: no position in this stream.
            return Replay(last_event_id, None, gap=True)
        try:
            # (0, 0): the stream was empty when the client began to follow
            # it (a cluster's cursor message): everything in it is new.
            start = last == (0, 0)
            try:
                info = await self._client.xinfo_stream(self.key)
            except ResponseError:  # no such key: no history at all
                return Replay(last_event_id, None, gap=exact and not start)
            newest = _text(info.get("last-generated-id") or b"0-0")
            newest_key = event_id_key(newest)
            if newest_key is None or last > newest_key:
                # An id this stream never gave: the client must reload.
                return Replay(last_event_id, None, gap=exact)
            if last == newest_key:
                return Replay(last_event_id, newest, gap=False)
            if _trimmed_after(info, last) or await self._more_than_limit(info, last):
                return Replay(last_event_id, None, gap=True)
            return Replay(last_event_id, newest, gap=False)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def entries(self, replay: Replay) -> AsyncIterator[list[Entry]]:
        """The replay's entries, oldest first, ``CHUNK`` at a time."""
        if replay.until is None:
            return
        start = f"({replay.after}"
        while True:
            try:
                raw = await self._client.xrange(
                    self.key, start, replay.until, count=CHUNK
                )
            except (RedisError, OSError) as exc:
                raise self._unavailable(exc) from exc
            if not raw:
                return
            entries = [
                _entry(entry_id, fields, self.id_prefix) for entry_id, fields in raw
            ]
            invalid = sum(entry.audience is None for entry in entries)
            if invalid:
                self.invalid_entries += invalid
                logger.warning("Skipped %d invalid entries of %s", invalid, self.key)
            yield entries
            if len(raw) < CHUNK:
                return
            start = f"({raw[-1][0].decode()}"

    async def _more_than_limit(self, info: dict, last: Position) -> bool:
        """Whether more than ``limit`` entries follow ``last``.

        The stream is trimmed approximately, so it may hold a little more
        than the limit: find the oldest entry within the newest ``limit``,
        reading the fewer entries of the two ends.
        """
        length = info.get("length", 0)
        excess = length - self.limit
        if excess <= 0:
            return False
        if self.limit == 0:
            return True
        if excess <= self.limit:
            older = await self._client.xrange(self.key, "-", "+", count=excess)
        else:
            older = await self._client.xrevrange(
                self.key, "+", "-", count=self.limit + 1
            )
        if not older:
            return False
        boundary = event_id_key(older[-1][0].decode())
        return boundary is not None and last < boundary

    def _unavailable(self, exc: Exception) -> HistoryUnavailable:
        logger.warning("History unavailable at %s: %s", mask_url(self.url), exc)
        return HistoryUnavailable(str(exc))

    async def close(self) -> None:
        """Close the connection to Redis."""
        await self._client.aclose()


@dataclasses.dataclass(frozen=True)
class ClusterReplay:
    """A resume on a Redis Cluster: a replay in each partition (see
    wsserver.cursors), or a gap."""

    after: str
    parts: dict[Partition, Replay]
    gap: bool

    @property
    def position(self) -> dict[Partition, Position] | None:
        """Each replayed partition's ``until``, comparable (None: nothing)."""
        positions = {
            partition: key
            for partition, replay in self.parts.items()
            if (key := replay.position) is not None
        }
        return positions or None


class ClusterHistory:
    """The partitions' history streams, read for a resume."""

    def __init__(
        self,
        history: Callable[[Partition], History],
        partitions: Callable[[Principal], frozenset[Partition]],
    ) -> None:
        self.history = history
        self.partitions = partitions
        # Stream reads at once, for every resume of the process: a
        # superuser's reads 257 streams, and the pool per node is bounded.
        self._reads = asyncio.Semaphore(32)

    async def _plan(
        self, partition: Partition, position: Position, exact: bool, since: Position
    ) -> Replay:
        async with self._reads:
            history = self.history(partition)
            replay = await history.plan(f"{position[0]}-{position[1]}", exact=exact)
            if replay.gap and exact and position < since:
                # Trimmed, but before the cursor's time: nothing the client
                # may see is gone (see wsserver.cursors).
                replay = await history.plan(f"{since[0]}-{since[1]}", exact=False)
            return replay

    async def plan(
        self, last_event_id: str, principal: Principal | None = None
    ) -> ClusterReplay:
        """Decide what a client at cursor ``last_event_id`` is sent."""
        assert principal is not None
        try:
            cursor = parse_cursor(last_event_id)
        except InvalidCursor:  # an id from one Redis: no position here
            return ClusterReplay(last_event_id, {}, gap=True)
        starts = cursor_starts(cursor, self.partitions(principal))
        since = cursor_since(cursor)
        replays = await asyncio.gather(
            *(
                self._plan(partition, position, exact, since)
                for partition, (position, exact) in starts.items()
            )
        )
        if any(replay.gap for replay in replays):
            return ClusterReplay(last_event_id, {}, gap=True)
        return ClusterReplay(
            last_event_id,
            {
                partition: replay
                for partition, replay in zip(starts, replays, strict=True)
                if replay.until is not None
            },
            gap=False,
        )

    async def entries(self, replay: ClusterReplay) -> AsyncIterator[list[Entry]]:
        """The replay's entries, each partition's in order, one after another."""
        for partition in sorted(replay.parts, key=str):
            async for entries in self.history(partition).entries(
                replay.parts[partition]
            ):
                yield [_routed(entry, partition) for entry in entries]

    async def close(self) -> None:
        """The streams' client is the subscriber's: it closes it."""


def _routed(entry: Entry, partition: Partition) -> Entry:
    """An entry of a partition's stream, for those who take it from this copy."""
    if entry.audience is None:
        return entry
    own, excluded = routed(entry.audience, partition)
    return Entry(entry.id, own or None, entry.payload, excluded)


def _entry(entry_id: bytes, fields: dict[bytes, bytes], prefix: str = "") -> Entry:
    """An entry as it is sent; its audience is None if it must not be."""
    event_id = prefix + entry_id.decode()
    # An event with an audience is kept as "aevent" (see wire.py), and only
    # with its audience.
    event = fields.get(b"aevent" if b"aud" in fields else b"event", b"")
    return Entry(event_id, _audience(event, fields), with_id(event, event_id))


# Audiences parsed for replays, by their JSON: every resuming connection
# reads the same entries, and a large audience takes milliseconds to parse.
_parsed: dict[bytes, Audience | None] = {}
_parsed_size = 0
MAX_PARSED_SIZE = 8 << 20


def _parsed_audience(text: bytes) -> Audience | None:
    global _parsed_size
    if text in _parsed:
        return _parsed[text]
    try:
        audience = parse_audience(text)
    except InvalidAudience:
        audience = None
    if _parsed_size + len(text) > MAX_PARSED_SIZE:
        _parsed.clear()
        _parsed_size = 0
    _parsed[text] = audience
    _parsed_size += len(text)
    return audience


def _audience(event: bytes, fields: dict[bytes, bytes]) -> Audience | None:
    if not _sendable(event):
        return None
    audience = fields.get(b"aud")
    if audience is not None:
        return _parsed_audience(audience)
    content_type = fields.get(b"ct")
    if content_type is not None and content_type.isdigit() and len(content_type) < 20:
        return content_type_audience(int(content_type))
    try:  # written before the publisher stored it, or by other code
        return parse_event(event).audience
    except InvalidEvent:
        return None


def _sendable(event: bytes) -> bool:
    """Whether a stored event makes a valid text frame once its id is put in:
    UTF-8, and a JSON object with at least one member (without parsing it)."""
    try:
        event.decode()
    except UnicodeDecodeError:
        return False
    body = event.strip()
    return body.startswith(b"{") and body.endswith(b"}") and bool(body[1:-1].strip())


def _trimmed_after(info: dict, last: Position) -> bool:
    """Whether entries after ``last`` may be missing from the stream.

    Trimming removes the oldest entries: while the client's last event is
    still in the stream, everything after it is too. Once it is gone, the
    next one may be gone as well, and the client is told (rarely needlessly).
    Entries deleted with XDEL show in ``max-deleted-entry-id`` (Redis 7).
    A stream that never lost an entry (``entries-added`` is its length) has
    them all.
    """
    if info.get("entries-added") is not None and info.get("entries-added") == info.get(
        "length"
    ):
        return False
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
