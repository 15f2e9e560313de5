"""Partitions: how events spread over a Redis Cluster (``WS_REDIS_CLUSTER``).

Plain Python, no I/O, Django-free: the publisher app and the sidecar share
it. Each audience target (a user, a group, a permission, a content type) has
one of :data:`PARTITIONS` partitions, by a stable hash of the target. Each
partition has a sharded pub/sub channel and a history stream, both named with
the partition's hash tag, so they live on one node and a script updates both
atomically. The tags are chosen so that partition ``i`` lands in the ``i``-th
of :data:`PARTITIONS` equal ranges of the cluster's 16,384 slots: a cluster
whose masters own equal slot ranges (as ``redis-cli --cluster create`` makes
them) carries equal shares of the partitions.

An event is published on each partition its audience has a target in. A
connection follows the partitions of its user, its groups, its permissions
and the content types it may see (a superuser: every partition), and takes
an event from the *lowest* of the partitions where the audience names it: the
copy on partition ``p`` goes to the connections in the audience's targets of
``p`` except those in its targets of lower partitions. Each connection gets
each event once, and a sidecar with no connection in a partition receives
nothing of it.

A copy carries the full audience, except when the audience names users only:
a connection matches one user, so users in other partitions cannot take it
and each copy carries only its own users.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .audience import Audience
from .routing import Principal

__all__ = [
    "PARTITIONS",
    "Interest",
    "channel_of",
    "copies",
    "followed",
    "history_key_of",
    "partition_of",
    "routed",
    "split",
]

# 256 partitions: 64 slots each. Enough to spread over hundreds of masters;
# few enough that a superuser's sidecar subscribes to every one.
PARTITIONS = 256
SLOTS_PER_PARTITION = REDIS_CLUSTER_HASH_SLOTS // PARTITIONS


def _tags() -> tuple[str, ...]:
    """For each partition, the shortest decimal tag whose slot is in its range."""
    tags: list[str | None] = [None] * PARTITIONS
    missing = PARTITIONS
    number = 0
    while missing:
        tag = str(number)
        index = key_slot(tag.encode()) // SLOTS_PER_PARTITION
        if tags[index] is None:
            tags[index] = tag
            missing -= 1
        number += 1
    return tuple(tag for tag in tags if tag is not None)


TAGS = _tags()


def channel_of(channel: str, partition: int) -> str:
    """The sharded channel of a partition of ``WS_CHANNEL``."""
    return f"{{{TAGS[partition]}}}:{channel}"


def history_key_of(channel: str, partition: int) -> str:
    """The history stream of a partition, in the same slot as its channel."""
    return f"{{{TAGS[partition]}}}:{channel}:history"


def _hash(kind: str, value: object) -> int:
    return zlib.crc32(f"{kind}:{value}".encode()) % PARTITIONS


def partition_of(
    *,
    user: str | None = None,
    group: int | None = None,
    permission: str | None = None,
    content_type: int | None = None,
) -> int:
    """The partition of one audience target (give exactly one)."""
    given = [
        (kind, value)
        for kind, value in (
            ("u", user),
            ("g", group),
            ("p", permission),
            ("c", content_type),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise TypeError("give exactly one target")
    return _hash(*given[0])


def split(audience: Audience) -> dict[int, Audience]:
    """The audience's targets, by partition."""
    parts: dict[int, tuple[set, set, set, set]] = {}
    for kind, index, values in (
        ("u", 0, audience.users),
        ("g", 1, audience.groups),
        ("p", 2, audience.permissions),
        ("c", 3, audience.content_types),
    ):
        for value in values:
            part = parts.setdefault(_hash(kind, value), (set(), set(), set(), set()))
            part[index].add(value)
    return {
        partition: Audience(*(frozenset(values) for values in part))
        for partition, part in parts.items()
    }


def copies(audience: Audience) -> list[tuple[int, Audience]]:
    """What to publish: the partitions of an audience, each with the audience
    its copy carries (see the module's docstring)."""
    parts = split(audience)
    if audience.groups or audience.permissions or audience.content_types:
        return [(partition, audience) for partition in sorted(parts)]
    return sorted(parts.items())


@functools.lru_cache(maxsize=4096)
def routed(audience: Audience, partition: int) -> tuple[Audience, Audience | None]:
    """Who takes the copy of an event that came on ``partition``: the
    audience's targets in it, minus (None: nobody) those in lower partitions.
    The first is empty when the audience has no target there."""
    parts = split(audience)
    own = parts.get(partition, Audience())
    lower = [part for index, part in parts.items() if index < partition]
    if not lower:
        return own, None
    return own, Audience(
        users=frozenset().union(*(part.users for part in lower)),
        groups=frozenset().union(*(part.groups for part in lower)),
        permissions=frozenset().union(*(part.permissions for part in lower)),
        content_types=frozenset().union(*(part.content_types for part in lower)),
    )


ALL = frozenset(range(PARTITIONS))


def followed(principal: Principal) -> frozenset[int]:
    """The partitions a connection of this principal needs."""
    if principal.permissions.everything:
        return ALL
    partitions = {_hash("u", principal.user_id)}
    partitions.update(_hash("g", group) for group in principal.group_ids)
    partitions.update(_hash("p", codename) for codename in principal.codenames)
    partitions.update(
        _hash("c", content_type)
        for content_type in principal.permissions.content_type_ids
    )
    return frozenset(partitions)


class Interest:
    """The partitions one process needs: how many connections need each.

    ``wanted`` is what to be subscribed to; ``on_change`` is called (with
    no argument) whenever it changes, for the subscriber to act on.
    """

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._followed: dict[Principal, frozenset[int]] = {}
        self.on_change: Callable[[], None] | None = None

    @property
    def wanted(self) -> frozenset[int]:
        return frozenset(self._counts)

    def add(self, principal: Principal) -> frozenset[int]:
        """Count a connection of this principal in; return its partitions."""
        partitions = self.partitions(principal)
        self.pin(partitions)
        return partitions

    def remove(self, principal: Principal) -> None:
        """Count a connection of this principal out."""
        self.unpin(self.partitions(principal))

    def partitions(self, principal: Principal) -> frozenset[int]:
        """The partitions a principal follows (computed once per principal)."""
        partitions = self._followed.get(principal)
        if partitions is None:
            if len(self._followed) > 100_000:
                self._followed.clear()
            partitions = self._followed[principal] = followed(principal)
        return partitions

    def pin(self, partitions: Iterable[int]) -> None:
        """Want these partitions, e.g. while a connection waits for them."""
        counts = self._counts
        for partition in partitions:
            if partition in counts:
                counts[partition] += 1
            else:
                counts[partition] = 1
                self._changed()

    def unpin(self, partitions: Iterable[int]) -> None:
        """Undo one :meth:`pin` of these partitions."""
        counts = self._counts
        for partition in partitions:
            count = counts.get(partition, 0) - 1
            if count > 0:
                counts[partition] = count
            elif partition in counts:
                del counts[partition]
                self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def needs(self, partitions: Iterable[int]) -> bool:
        """Whether any of these partitions is wanted."""
        return any(partition in self._counts for partition in partitions)
