"""Access changes: whose access to recheck, and whose check may be stale.

Plain Python, no I/O. The main site says whose access may have changed (see
:mod:`wsserver.control`); the server rechecks those of its users, and must
not trust a check that read the database before a change it has not seen:

- an authentication that overlapped a change of its user is rechecked before
  the connection is registered;
- a periodic recheck that overlapped a change of one of its users leaves that
  user to the recheck the change itself triggered.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from typing import TYPE_CHECKING

from .control import GroupChanged, UsersChanged

if TYPE_CHECKING:
    from .routing import Principal

__all__ = ["AccessChanges", "affected_users"]

# Users whose last change is remembered one by one; past that, every check
# older than the last change counts as stale (a rare, safe overestimate).
MAX_REMEMBERED_USERS = 10_000


class AccessChanges:
    """Count changes, so that a check can tell whether one overlapped it."""

    def __init__(self) -> None:
        self.count = 0
        self._by_user: dict[str, int] = {}
        self._everyone = 0  # the last change that concerned every user

    def note(self, change: UsersChanged | GroupChanged) -> None:
        """Count a change, of its users, or of everyone: for a group (whose members
        are not known here) or once too many users are remembered.
        """
        self.count += 1
        if (
            isinstance(change, GroupChanged)
            or len(self._by_user) > MAX_REMEMBERED_USERS
        ):
            # Any user may be a member of the group, or may have been forgotten.
            self._by_user.clear()
            self._everyone = self.count
        else:
            for user_id in change.user_ids:
                self._by_user[user_id] = self.count

    def note_everyone(self) -> None:
        """Any user's access may have changed (e.g. messages were lost)."""
        self.count += 1
        self._by_user.clear()
        self._everyone = self.count

    def changed_since(self, user_id: str, count: int) -> bool:
        """Whether the user's access may have changed after ``count``."""
        return max(self._everyone, self._by_user.get(user_id, 0)) > count


def affected_users(
    change: UsersChanged | GroupChanged,
    connected: Collection[Hashable],
    principals: Iterable[Principal],
) -> set[str]:
    """The connected users whose access the change may have changed.

    A group's members are known from their principals, loaded with them:
    every change of a membership is itself a change of that user, which
    updates their principal (and rechecks catch any message that was lost).
    """
    if isinstance(change, GroupChanged):
        return {p.user_id for p in principals if change.group_id in p.group_ids}
    return {user_id for user_id in change.user_ids if user_id in connected}
