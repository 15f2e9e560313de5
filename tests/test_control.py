"""Access-change messages from the main site (wsserver.control)."""

from __future__ import annotations

import pytest

from wsserver.control import GroupChanged, InvalidControl, UsersChanged, parse_control


def test_control_messages():
    assert parse_control(b'{"type": "users", "user_ids": ["1", 2]}') == UsersChanged(
        frozenset({"1", "2"})
    )
    assert parse_control('{"type": "group", "group_id": 4}') == GroupChanged(4)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"type": "users", "user_ids": [true]}',
        b'{"type": "users", "user_ids": "1"}',
        b'{"type": "group", "group_id": "4"}',
        b'{"type": "everyone"}',
        b"\xff",
    ],
)
def test_invalid_control_messages(payload):
    with pytest.raises(InvalidControl):
        parse_control(payload)
