"""Partitions: how events spread over a Redis Cluster (``WS_REDIS_CLUSTER``).

Plain Python, no I/O, Django-free: the publisher app and the sidecar share
it. Each audience target has a partition, by a stable hash of the target:

- a user: one of :data:`USER_PARTITIONS` (2**20) *user partitions*, named
  ``"u<n>"``: so many that a sidecar follows few beside its own users', and
  receives little of other users' personal events (with 10,000 users per
  sidecar, about 1% of them);
- a group, a permission or a content type: one of :data:`PARTITIONS` (256)
  *shared partitions*, numbered, which most sidecars follow anyway.

Each partition has a sharded pub/sub channel and a history stream, both
named with the partition's hash tag, so they live on one node and a script
updates both atomically. A shared partition's tag is chosen so that
partition ``i`` lands in the ``i``-th of 256 equal ranges of the cluster's
16,384 slots: masters that own equal slot ranges (as ``redis-cli --cluster
create`` makes them) carry equal shares. User partitions are spread by the
slot hash itself: about 64 to a slot.

An event is published on each partition its audience has a target in. A
connection follows its user's partition, its groups', its permissions' and
those of the content types it may see (a superuser: every shared partition,
since it receives every permission and model audience; never other users'
partitions), and takes an event from the *first* of the partitions where the
audience names it, user partitions first, then shared ones by number: the
copy on partition ``p`` goes to the connections in the audience's targets of
``p`` except those in its targets of earlier partitions. Each connection
gets each event once, and a sidecar with no connection in a partition
receives nothing of it.

A user partition's copy carries only its own users: users come first, and a
connection matches one user, so nothing there is left to another copy. A
shared partition's copy carries the whole audience, which names who took the
event from an earlier copy.
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
    "USER_PARTITIONS",
    "Interest",
    "Partition",
    "channel_of",
    "copies",
    "followed",
    "history_key_of",
    "parse_partition",
    "partition_of",
    "routed",
    "slot_of",
    "split",
]

# A shared partition's number, or a user partition's name ("u<n>").
Partition = int | str

# 256 shared partitions: 64 slots each. Enough to spread over hundreds of
# masters; few enough that a superuser's sidecar follows every one.
PARTITIONS = 256
SLOTS_PER_PARTITION = REDIS_CLUSTER_HASH_SLOTS // PARTITIONS
USER_PARTITIONS = 1 << 20


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


def _tag(partition: Partition) -> str:
    return partition if isinstance(partition, str) else TAGS[partition]


def channel_of(channel: str, partition: Partition) -> str:
    """The sharded channel of a partition of ``WS_CHANNEL``."""
    return f"{{{_tag(partition)}}}:{channel}"


def history_key_of(channel: str, partition: Partition) -> str:
    """The history stream of a partition, in the same slot as its channel."""
    return f"{{{_tag(partition)}}}:{channel}:history"


def slot_of(partition: Partition) -> int:
    """The cluster slot of a partition's channel and stream."""
    return key_slot(_tag(partition).encode())


def parse_partition(text: str) -> Partition | None:
    """A partition from its text in an event id ("17", "u42"); None if none."""
    if text.startswith("u"):
        number = text[1:]
        valid = 0 < len(number) <= 7 and number.isascii() and number.isdigit()
        return text if valid and int(number) < USER_PARTITIONS else None
    valid = 0 < len(text) <= 3 and text.isascii() and text.isdigit()
    return int(text) if valid and int(text) < PARTITIONS else None


def _hash(kind: str, value: object) -> Partition:
    if kind == "u":
        return f"u{zlib.crc32(f'u:{value}'.encode()) % USER_PARTITIONS}"
    return zlib.crc32(f"{kind}:{value}".encode()) % PARTITIONS


def partition_of(
    *,
    user: str | None = None,
    group: int | None = None,
    permission: str | None = None,
    content_type: int | None = None,
) -> Partition:
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


def _rank(partition: Partition) -> int:
    """The order in which a connection takes copies: users' first."""
    return -1 if isinstance(partition, str) else partition


def split(audience: Audience) -> dict[Partition, Audience]:
    """The audience's targets, by partition."""
    parts: dict[Partition, tuple[set, set, set, set]] = {}
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


def copies(audience: Audience) -> list[tuple[Partition, Audience]]:
    """What to publish: the partitions of an audience, each with the audience
    its copy carries. A user partition's copy carries its own users only (a
    connection there has no earlier copy to leave it to); a shared
    partition's copy carries the whole audience, which says who took the
    event from an earlier copy."""
    parts = split(audience)
    shared = bool(audience.groups or audience.permissions or audience.content_types)
    return [
        (partition, audience if shared and isinstance(partition, int) else part)
        for partition, part in sorted(parts.items(), key=lambda item: str(item[0]))
    ]


def routed(
    audience: Audience, partition: Partition
) -> tuple[Audience, Audience | None]:
    """Who takes the copy of an event that came on ``partition``: the
    audience's targets in it, minus (None: nobody) those in earlier
    partitions. The first is empty when the audience has no target there.

    Small audiences (most) are remembered; large ones, which could fill the
    memory, are split each time.
    """
    size = (
        len(audience.users)
        + len(audience.groups)
        + len(audience.permissions)
        + len(audience.content_types)
    )
    if size <= 64:
        return _routed(audience, partition)
    return _routed.__wrapped__(audience, partition)


@functools.lru_cache(maxsize=4096)
def _routed(
    audience: Audience, partition: Partition
) -> tuple[Audience, Audience | None]:
    parts = split(audience)
    own = parts.get(partition, Audience())
    rank = _rank(partition)
    earlier = [part for index, part in parts.items() if _rank(index) < rank]
    if not earlier:
        return own, None
    return own, Audience(
        users=frozenset().union(*(part.users for part in earlier)),
        groups=frozenset().union(*(part.groups for part in earlier)),
        permissions=frozenset().union(*(part.permissions for part in earlier)),
        content_types=frozenset().union(*(part.content_types for part in earlier)),
    )


SHARED = frozenset(range(PARTITIONS))


def followed(principal: Principal) -> frozenset[Partition]:
    """The partitions a connection of this principal needs."""
    partitions: set[Partition] = {_hash("u", principal.user_id)}
    partitions.update(_hash("g", group) for group in principal.group_ids)
    if principal.permissions.everything:
        partitions.update(SHARED)
        return frozenset(partitions)
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
        self._counts: dict[Partition, int] = {}
        self._followed: dict[Principal, frozenset[Partition]] = {}
        self.on_change: Callable[[], None] | None = None
        # What changed since take_changes() last said.
        self._added: set[Partition] = set()
        self._removed: set[Partition] = set()

    @property
    def wanted(self) -> frozenset[Partition]:
        return frozenset(self._counts)

    def add(self, principal: Principal) -> frozenset[Partition]:
        """Count a connection of this principal in; return its partitions."""
        partitions = self.partitions(principal)
        self.pin(partitions)
        return partitions

    def remove(self, principal: Principal) -> None:
        """Count a connection of this principal out."""
        self.unpin(self.partitions(principal))

    def partitions(self, principal: Principal) -> frozenset[Partition]:
        """The partitions a principal follows (computed once per principal)."""
        partitions = self._followed.get(principal)
        if partitions is None:
            if len(self._followed) > 100_000:
                self._followed.clear()
            partitions = self._followed[principal] = followed(principal)
        return partitions

    def pin(self, partitions: Iterable[Partition]) -> None:
        """Want these partitions, e.g. while a connection waits for them."""
        counts = self._counts
        for partition in partitions:
            if partition in counts:
                counts[partition] += 1
            else:
                counts[partition] = 1
                self._added.add(partition)
                self._removed.discard(partition)
                self._changed()

    def unpin(self, partitions: Iterable[Partition]) -> None:
        """Undo one :meth:`pin` of these partitions."""
        counts = self._counts
        for partition in partitions:
            count = counts.get(partition, 0) - 1
            if count > 0:
                counts[partition] = count
            elif partition in counts:
                del counts[partition]
                self._removed.add(partition)
                self._added.discard(partition)
                self._changed()

    def take_changes(self) -> tuple[set[Partition], set[Partition]]:
        """The partitions wanted, and no longer wanted, since the last call."""
        changes = self._added, self._removed
        self._added, self._removed = set(), set()
        return changes

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
