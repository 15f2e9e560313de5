"""Whose access to recheck, and whose check may be stale: no I/O."""

from __future__ import annotations

from typing import NamedTuple

from wsserver.access import MAX_REMEMBERED_USERS, AccessChanges, affected_users
from wsserver.control import GroupChanged, UsersChanged


class Principal(NamedTuple):
    """What affected_users reads of wsserver.auth.Principal."""

    user_id: str
    group_ids: frozenset[int]


def principal(user_id: str, *group_ids: int) -> Principal:
    return Principal(user_id, frozenset(group_ids))


def test_a_change_of_a_user_makes_their_older_checks_stale():
    changes = AccessChanges()
    before = changes.count
    changes.note(UsersChanged(frozenset({"1", "2"})))
    assert changes.changed_since("1", before)
    assert changes.changed_since("2", before)
    assert not changes.changed_since("3", before)
    assert not changes.changed_since("1", changes.count)


def test_a_change_of_a_group_makes_everyone_s_older_checks_stale():
    changes = AccessChanges()
    before = changes.count
    changes.note(GroupChanged(7))
    assert changes.changed_since("anyone", before)
    after = changes.count
    changes.note(UsersChanged(frozenset({"1"})))
    assert changes.changed_since("1", after)
    assert not changes.changed_since("2", after)


def test_past_the_users_it_remembers_every_older_check_is_stale():
    changes = AccessChanges()
    for number in range(MAX_REMEMBERED_USERS + 1):
        changes.note(UsersChanged(frozenset({str(number)})))
    before = changes.count
    changes.note(UsersChanged(frozenset({"new"})))
    assert changes.changed_since("never changed", before - 1)
    assert not changes.changed_since("never changed", changes.count)


def test_affected_users_of_a_group_are_its_connected_members():
    principals = [
        principal("1", 7),
        principal("2", 7, 8),
        principal("3"),
        principal("1", 7),
    ]
    connected = {"1", "2", "3"}
    assert affected_users(GroupChanged(7), connected, principals) == {"1", "2"}
    assert affected_users(GroupChanged(8), connected, principals) == {"2"}
    assert affected_users(GroupChanged(9), connected, principals) == set()


def test_affected_users_of_a_user_change_are_those_connected():
    changed = UsersChanged(frozenset({"1", "4", "9" * 5000}))
    assert affected_users(changed, {"1", "2"}, []) == {"1"}
