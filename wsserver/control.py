"""Control messages: the main site says whose access may have changed.

Plain Python, no I/O. The publisher app sends them on ``<channel>:control``
when users or groups change; they are never forwarded to clients:

- ``{"type": "users", "user_ids": ["1", "2"]}``: these users were saved,
  deleted, or had their groups or direct permissions changed;
- ``{"type": "group", "group_id": 3}``: this group's permissions changed.
"""

from __future__ import annotations

import dataclasses
import json

__all__ = ["GroupChanged", "InvalidControl", "UsersChanged", "parse_control"]


class InvalidControl(ValueError):
    """A control message that is not JSON, malformed or of an unknown type."""


@dataclasses.dataclass(frozen=True, slots=True)
class UsersChanged:
    """These users were saved or deleted, or their groups or permissions changed."""

    user_ids: frozenset[str]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupChanged:
    """This group's permissions changed, and so may its members' access."""

    group_id: int


def parse_control(payload: bytes | str) -> UsersChanged | GroupChanged:
    """Parse a message of the control channel; raise InvalidControl if it is not one.

    User ids become strings, as principals hold them, whether the main site sent
    integers or strings (e.g. UUIDs).
    """
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidControl(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidControl("not a JSON object")
    kind = data.get("type")
    if kind == "users":
        user_ids = data.get("user_ids")
        if not isinstance(user_ids, list) or not all(
            isinstance(user_id, str | int) and not isinstance(user_id, bool)
            for user_id in user_ids
        ):
            raise InvalidControl("user_ids must be a list of ids")
        return UsersChanged(frozenset(str(user_id) for user_id in user_ids))
    if kind == "group":
        group_id = data.get("group_id")
        if type(group_id) is not int:
            raise InvalidControl("group_id must be an integer")
        return GroupChanged(group_id)
    raise InvalidControl(f"unknown type {kind!r}")
