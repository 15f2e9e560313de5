"""Audiences: who may receive an event, as the main site names them.

Plain Python, no I/O, Django-free: the publisher app encodes audiences and
the sidecar decodes them with this module. An audience is the union of:

- ``users``: user pks (as strings);
- ``groups``: group pks: their members at delivery time;
- ``permissions``: ``"app_label.codename"``: users who have any of them,
  directly or through a group, and active superusers;
- ``content_types``: content type ids: users who may view or change the
  model (``view_<model>`` or ``change_<model>``), and active superusers.

Superusers receive permission and content type audiences, never another
user's ``users`` or ``groups`` events.

On the bus, an event with an audience is ``@`` + the audience as compact
JSON + a newline + the event exactly as clients receive it (see
:mod:`wsserver.wire`). An admin event without one is routed by its
``content_type_id`` field, as it always was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .routing import Principal

__all__ = [
    "ADDRESSED",
    "AUDIENCE_KEYS",
    "MAX_AUDIENCE_SIZE",
    "PERMISSION_FORMAT",
    "Audience",
    "InvalidAudience",
    "parse_audience",
]

# The first byte of a bus message that carries an audience: never the start
# of a JSON text, so it cannot be mistaken for an admin event.
ADDRESSED = b"@"

# The largest audience (its JSON) a bus message may carry: about 50,000 user
# ids. Larger ones are refused by publish() and skipped by the sidecar.
MAX_AUDIENCE_SIZE = 1 << 20

AUDIENCE_KEYS = ("users", "groups", "permissions", "content_types")

# "app_label.codename", as Django's has_perm() takes them.
PERMISSION_FORMAT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[^\s]{1,255}\Z")

# Integers a database id column can hold (PostgreSQL's bigint is the widest).
_MAX_ID = 2**63 - 1
# A user pk as text: an integer, a UUID, or another key of reasonable size.
_MAX_USER_ID_LENGTH = 255


class InvalidAudience(ValueError):
    """An audience that is not well-formed: the event is skipped."""


@dataclasses.dataclass(frozen=True, slots=True)
class Audience:
    """The union of users, groups, permissions and content types."""

    users: frozenset[str] = frozenset()
    groups: frozenset[int] = frozenset()
    permissions: frozenset[str] = frozenset()
    content_types: frozenset[int] = frozenset()

    @classmethod
    def of_content_type(cls, content_type_id: int) -> Audience:
        """An admin event's audience: who may view or change the model."""
        return cls(content_types=frozenset([content_type_id]))

    def __bool__(self) -> bool:
        return bool(self.users or self.groups or self.permissions or self.content_types)

    def allows(self, principal: Principal) -> bool:
        """Whether this principal is in the audience (for replays: the router
        answers the same question for live events, with indexes)."""
        if principal.user_id in self.users:
            return True
        if self.groups and not self.groups.isdisjoint(principal.group_ids):
            return True
        permissions = principal.permissions
        if self.permissions and (
            permissions.everything
            or not self.permissions.isdisjoint(principal.codenames)
        ):
            return True
        return any(permissions.allows(ct) for ct in self.content_types)

    def to_json(self) -> str:
        """The audience as the compact JSON a bus message carries."""
        return encode_audience(
            users=self.users,
            groups=self.groups,
            permissions=self.permissions,
            content_types=self.content_types,
        )


def encode_audience(
    *,
    users: Iterable[str] = (),
    groups: Iterable[int] = (),
    permissions: Iterable[str] = (),
    content_types: Iterable[int] = (),
) -> str:
    """Compact, sorted JSON with the non-empty parts only (no newline in it)."""
    parts = {
        "users": sorted(set(users)),
        "groups": sorted(set(groups)),
        "permissions": sorted(set(permissions)),
        "content_types": sorted(set(content_types)),
    }
    return json.dumps(
        {key: value for key, value in parts.items() if value},
        separators=(",", ":"),
        ensure_ascii=True,
    )


def parse_audience(text: bytes | str) -> Audience:
    """Decode an audience; raise :class:`InvalidAudience` for anything else.

    Strict, since it decides who receives the event: an unknown key, a value
    of the wrong type, or an empty audience is refused (the event is skipped,
    never sent to a wider audience).
    """
    if len(text) > MAX_AUDIENCE_SIZE:
        raise InvalidAudience(f"{len(text)} bytes, more than {MAX_AUDIENCE_SIZE}")
    try:
        # Decoded first: json.loads() would take UTF-16 and UTF-32 bytes too.
        data = json.loads(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, RecursionError) as exc:
        raise InvalidAudience(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidAudience(f"not a JSON object but {type(data).__name__}")
    unknown = set(data) - set(AUDIENCE_KEYS)
    if unknown:
        raise InvalidAudience(f"unknown key(s) {sorted(unknown)}")
    audience = Audience(
        users=_strings(data, "users", _user_id),
        groups=_ids(data, "groups"),
        permissions=_strings(data, "permissions", _permission),
        content_types=_ids(data, "content_types"),
    )
    if not audience:
        raise InvalidAudience("empty: nobody would receive the event")
    return audience


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise InvalidAudience(f"{key} is {type(value).__name__}, expected a list")
    return value


def _ids(data: dict, key: str) -> frozenset[int]:
    values = _list(data, key)
    for value in values:
        # bool is a subclass of int, and true is not an id.
        if type(value) is not int or not 0 <= value <= _MAX_ID:
            raise InvalidAudience(f"{key} holds {value!r}, expected ids")
    return frozenset(values)


def _strings(data: dict, key: str, valid) -> frozenset[str]:
    values = _list(data, key)
    for value in values:
        if not (isinstance(value, str) and valid(value)):
            raise InvalidAudience(f"{key} holds {str(value)[:100]!r}")
    return frozenset(values)


def _user_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_USER_ID_LENGTH and "\x00" not in value


def _permission(value: str) -> bool:
    return PERMISSION_FORMAT.match(value) is not None
