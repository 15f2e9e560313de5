"""The routing core: which connections receive an event, given its audience.

Plain Python with no I/O: no asyncio, Django or Redis. Connections are opaque
hashable objects. Indexes map each user, group, permission and content type
to the connections in it, so routing an event costs in proportion to its
recipients, not to the number of open connections: a personal event to one
of 10,000 connections is one dictionary lookup.

Permissions are indexed in two steps, since users share a few sets of them
(roles) while each has dozens: connections by their set of permissions, and
for each permission, the sets that include it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from .audience import Audience

if TYPE_CHECKING:
    from .partitions import Interest

__all__ = ["Permissions", "Principal", "Router"]

C = TypeVar("C", bound=Hashable)


@dataclasses.dataclass(frozen=True, slots=True)
class Permissions:
    """What a user may see: some content types, or everything (superusers)."""

    content_type_ids: frozenset[int] = frozenset()
    everything: bool = False

    @classmethod
    def all(cls) -> Permissions:
        """A superuser's permissions: every content type, present and future."""
        return cls(everything=True)

    def allows(self, content_type_id: int) -> bool:
        """Whether an event of this content type may be sent."""
        return self.everything or content_type_id in self.content_type_ids


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as the server needs it (made by wsserver.auth).

    Frozen and hashable; ``permissions`` and ``group_ids`` are shared between
    principals that have equal ones (see Authenticator), so that thousands
    of connections cost one object per distinct set.
    """

    user_id: str
    username: str
    permissions: Permissions
    # A digest of django-sesame's revocation key (the password and/or the
    # email, as SESAME_INVALIDATE_ON_* say): it changes exactly when the
    # user's tokens die, and so must the connections they opened. Keyed with
    # the signing key, so it tells nothing about them; kept out of repr().
    credentials: str = dataclasses.field(default="", repr=False)
    # The groups the user belongs to, whether or not they grant anything:
    # who to recheck when a group changes, and who receives a group's events.
    group_ids: frozenset[int] = frozenset()
    # Every permission the user has, directly or through a group, as
    # "app_label.codename" (shared like ``permissions``).
    codenames: frozenset[str] = frozenset()


class Router(Generic[C]):
    """Index connections by user and by the content types they may see.

    The router is where a connection is registered: it holds each one's
    :class:`Principal`, and removing a connection forgets everything about it.
    """

    def __init__(self, interest: Interest | None = None) -> None:
        # On a Redis Cluster: counts the partitions the connections follow.
        self.interest = interest
        self._principals: dict[C, Principal] = {}
        self._by_content_type: dict[int, set[C]] = {}
        self._everything: set[C] = set()
        self._by_user: dict[Hashable, set[C]] = {}
        self._by_group: dict[int, set[C]] = {}
        self._by_codenames: dict[frozenset[str], set[C]] = {}
        self._codename_sets: dict[str, set[frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._principals)

    def __contains__(self, connection: object) -> bool:
        return connection in self._principals

    def add(self, connection: C, principal: Principal) -> None:
        """Start routing events to a connection."""
        if connection in self._principals:
            raise ValueError("connection is already registered")
        self._principals[connection] = principal
        self._by_user.setdefault(principal.user_id, set()).add(connection)
        self._index(connection, principal)
        if self.interest is not None:
            self.interest.add(principal)

    def remove(self, connection: C) -> Principal | None:
        """Stop routing events to a connection; return its principal (None if
        it was not registered)."""
        principal = self._principals.pop(connection, None)
        if principal is None:
            return None
        self._unindex(connection, principal)
        if self.interest is not None:
            self.interest.remove(principal)
        connections = self._by_user[principal.user_id]
        connections.discard(connection)
        if not connections:
            del self._by_user[principal.user_id]
        return principal

    def update(self, connection: C, principal: Principal) -> None:
        """Replace a connection's principal (the same user's, reloaded); its
        permissions apply to the next event."""
        previous = self._principals[connection]
        if previous.user_id != principal.user_id:
            raise ValueError("a connection's user cannot change")
        self._unindex(connection, previous)
        self._principals[connection] = principal
        self._index(connection, principal)
        if self.interest is not None:
            self.interest.add(principal)
            self.interest.remove(previous)

    def recipients(self, audience: Audience) -> Iterable[C]:
        """The connections in an audience, each once.

        Iterating the result must end before any connection is added or
        removed: it may be one of the router's own sets.
        """
        sources: list[Iterable[C]] = []
        if audience.permissions or audience.content_types:
            if self._everything:
                sources.append(self._everything)
            for codename in audience.permissions:
                for codenames in self._codename_sets.get(codename, ()):
                    sources.append(self._by_codenames[codenames])
            for content_type_id in audience.content_types:
                connections = self._by_content_type.get(content_type_id)
                if connections:
                    sources.append(connections)
        for user_id in audience.users:
            connections = self._by_user.get(user_id)
            if connections:
                sources.append(connections)
        for group_id in audience.groups:
            connections = self._by_group.get(group_id)
            if connections:
                sources.append(connections)
        if len(sources) == 1:
            return sources[0]
        if not sources:
            return ()
        if _disjoint(audience):
            # chain() iterates in C; a generator would resume once per delivery.
            return itertools.chain.from_iterable(sources)
        return set().union(*sources)

    def recipients_of_content_type(self, content_type_id: int) -> Iterator[C]:
        """The connections that may see an admin event of this content type."""
        return itertools.chain(
            self._everything, self._by_content_type.get(content_type_id, ())
        )

    def count_recipients(self, content_type_id: int) -> int:
        """How many connections may see an event of this content type, without
        iterating over them.
        """
        return len(self._everything) + len(
            self._by_content_type.get(content_type_id, ())
        )

    def count_audience(self, audience: Audience) -> int:
        """How many connections are in an audience."""
        recipients = self.recipients(audience)
        if isinstance(recipients, set | frozenset):
            return len(recipients)
        return sum(1 for _ in recipients)

    def principal(self, connection: C) -> Principal:
        """The principal a connection was registered (or last updated) with."""
        return self._principals[connection]

    def permissions(self, connection: C) -> Permissions:
        """A connection's permissions, as of its registration or last update."""
        return self._principals[connection].permissions

    def items(self) -> Iterable[tuple[C, Principal]]:
        """Every registered connection with its principal (a live view)."""
        return self._principals.items()

    def principals(self) -> Iterable[Principal]:
        """Every registered connection's principal (one per connection)."""
        return self._principals.values()

    def connections_of(self, user_id: Hashable) -> frozenset[C]:
        """The connections of one user, e.g. to revoke or to enforce a limit."""
        return frozenset(self._by_user.get(user_id, ()))

    def users(self) -> Iterable[Hashable]:
        """The users with at least one registered connection (a live view)."""
        return self._by_user.keys()

    def _index(self, connection: C, principal: Principal) -> None:
        for group_id in principal.group_ids:
            self._by_group.setdefault(group_id, set()).add(connection)
        permissions = principal.permissions
        if permissions.everything:
            # Superusers receive every permission and content type audience.
            self._everything.add(connection)
            return
        codenames = principal.codenames
        if codenames:
            connections = self._by_codenames.get(codenames)
            if connections is None:
                connections = self._by_codenames[codenames] = set()
                for codename in codenames:
                    self._codename_sets.setdefault(codename, set()).add(codenames)
            connections.add(connection)
        for content_type_id in permissions.content_type_ids:
            self._by_content_type.setdefault(content_type_id, set()).add(connection)

    def _unindex(self, connection: C, principal: Principal) -> None:
        for group_id in principal.group_ids:
            _discard(self._by_group, group_id, connection)
        permissions = principal.permissions
        if permissions.everything:
            self._everything.discard(connection)
            return
        codenames = principal.codenames
        if codenames and _discard(self._by_codenames, codenames, connection):
            for codename in codenames:
                _discard(self._codename_sets, codename, codenames)
        for content_type_id in permissions.content_type_ids:
            _discard(self._by_content_type, content_type_id, connection)


def _discard(index: dict, key: Hashable, value: Hashable) -> bool:
    """Remove ``value`` from the set at ``index[key]``, and the set once
    empty; whether the set was removed."""
    values = index.get(key)
    if values is None:
        return False
    values.discard(value)
    if values:
        return False
    del index[key]
    return True


def _disjoint(audience: Audience) -> bool:
    """Whether the router's sources for this audience cannot overlap, so that
    chaining them names each connection once.

    Users: a connection has one user. One group, permission or content type:
    superusers are indexed apart from the permission and content type sets,
    and each connection is in one permission set.
    """
    kinds = [
        kind
        for kind in (
            audience.users,
            audience.groups,
            audience.permissions,
            audience.content_types,
        )
        if kind
    ]
    if len(kinds) != 1:
        return False
    return kinds[0] is audience.users or len(kinds[0]) == 1
