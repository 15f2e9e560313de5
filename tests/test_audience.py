"""Audiences on their own: encoding, strict decoding, and who is in one."""

from __future__ import annotations

import json

import pytest

from wsserver.audience import (
    MAX_AUDIENCE_SIZE,
    Audience,
    InvalidAudience,
    encode_audience,
    parse_audience,
)
from wsserver.routing import Permissions, Principal


def principal(user_id="1", *, cts=(), groups=(), codenames=(), superuser=False):
    permissions = Permissions.all() if superuser else Permissions(frozenset(cts))
    return Principal(
        user_id,
        f"user{user_id}",
        permissions,
        group_ids=frozenset(groups),
        codenames=frozenset(codenames),
    )


def test_encoding_is_compact_sorted_and_round_trips():
    text = encode_audience(
        users=["9", "7", "7"], groups=[3], permissions=["shop.view_order"]
    )
    assert text == (
        '{"users":["7","9"],"groups":[3],"permissions":["shop.view_order"]}'
    )
    assert "\n" not in text
    assert parse_audience(text) == Audience(
        users=frozenset({"7", "9"}),
        groups=frozenset({3}),
        permissions=frozenset({"shop.view_order"}),
    )
    assert Audience.of_content_type(4).to_json() == '{"content_types":[4]}'


def test_non_ascii_user_ids_stay_on_one_line():
    text = encode_audience(users=["é\n"])
    assert "\n" not in text
    assert parse_audience(text).users == {"é\n"}


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[]",
        b"{}",  # nobody
        b'{"users":[]}',
        b'{"everyone":true}',  # unknown keys never widen an audience
        b'{"users":"7"}',
        b'{"users":[7]}',
        b'{"users":[""]}',
        b'{"users":["a\\u0000"]}',
        b'{"groups":["3"]}',
        b'{"groups":[true]}',
        b'{"groups":[-1]}',
        b'{"groups":[1.0]}',
        b'{"content_types":[99999999999999999999]}',
        b'{"permissions":["view_order"]}',
        b'{"permissions":["shop.view order"]}',
        b'{"permissions":[".x"]}',
        b'{"permissions":[3]}',
        b"[" * 100_000,
        '{"users":["7"]}'.encode("utf-16"),
        '{"users":["7"]}'.encode("utf-16-le"),
        '{"users":["7"]}'.encode("utf-32"),
    ],
)
def test_malformed_audiences_are_refused(text):
    with pytest.raises(InvalidAudience):
        parse_audience(text)


def test_an_audience_too_large_is_refused_before_parsing():
    users = [str(n) for n in range(MAX_AUDIENCE_SIZE // 4)]
    with pytest.raises(InvalidAudience, match="more than"):
        parse_audience(json.dumps({"users": users}))


def test_who_is_in_an_audience():
    alice = principal("1", cts=[5], groups=[3], codenames=["shop.view_order"])
    root = principal("2", superuser=True)
    nobody = principal("3")
    cases = {
        Audience(users=frozenset({"1"})): {"1"},
        Audience(groups=frozenset({3})): {"1"},
        Audience(groups=frozenset({4})): set(),
        Audience(permissions=frozenset({"shop.view_order"})): {"1", "2"},
        Audience(permissions=frozenset({"shop.add_order"})): {"2"},
        Audience.of_content_type(5): {"1", "2"},
        Audience.of_content_type(6): {"2"},
        # Superusers never receive another user's personal or group events.
        Audience(users=frozenset({"3"}), groups=frozenset({3})): {"1", "3"},
    }
    for audience, expected in cases.items():
        allowed = {p.user_id for p in (alice, root, nobody) if audience.allows(p)}
        assert allowed == expected, audience
