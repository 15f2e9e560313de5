"""wsserver.partitions: which partitions an event goes to, which a
connection follows, and that each connection takes each event once."""

from __future__ import annotations

import random

import pytest
from redis.crc import key_slot

from wsserver.audience import Audience
from wsserver.delivery import Delivery
from wsserver.events import Event
from wsserver.partitions import (
    PARTITIONS,
    TAGS,
    USER_PARTITIONS,
    Interest,
    channel_of,
    copies,
    followed,
    history_key_of,
    parse_partition,
    partition_of,
    routed,
    slot_of,
)
from wsserver.routing import Permissions, Principal, Router


def test_each_partition_has_its_own_equal_range_of_slots():
    for partition, tag in enumerate(TAGS):
        assert key_slot(tag.encode()) // (16384 // PARTITIONS) == partition
    assert len(set(TAGS)) == PARTITIONS


def test_a_partitions_channel_and_stream_share_a_slot():
    for partition in (0, 17, 255):
        channel = channel_of("events", partition)
        assert key_slot(channel.encode()) == key_slot(
            history_key_of("events", partition).encode()
        )
        # The tag comes first: braces in the channel's name change nothing.
        assert key_slot(channel_of("{x}", partition).encode()) == key_slot(
            channel.encode()
        )


def test_partitions_are_stable_and_spread():
    assert partition_of(user="42") == partition_of(user="42")
    groups = {partition_of(group=n) for n in range(10_000)}
    assert groups == set(range(PARTITIONS))
    # Users have partitions of their own, many: 10,000 users use nearly
    # 10,000 of them, spread over the slots.
    users = {partition_of(user=str(n)) for n in range(10_000)}
    assert all(isinstance(p, str) and p.startswith("u") for p in users)
    assert len(users) > 9_900
    slots = [slot_of(p) for p in users]
    assert len(set(slots)) > 7_000
    assert parse_partition(partition_of(user="42")) == partition_of(user="42")
    assert parse_partition("255") == 255
    for text in ("256", f"u{USER_PARTITIONS}", "u", "x1", "", "01234"):
        assert parse_partition(text) is None
    with pytest.raises(TypeError):
        partition_of(user="1", group=1)


def test_an_audience_of_users_is_split_and_each_copy_carries_its_own():
    audience = Audience(users=frozenset(str(n) for n in range(50)))
    published = copies(audience)
    assert sorted({p for p, _ in published}) == [p for p, _ in published]
    assert frozenset().union(*(part.users for _, part in published)) == audience.users
    for partition, part in published:
        assert all(partition_of(user=user) == partition for user in part.users)


def test_a_mixed_audience_shared_copies_carry_it_whole_user_copies_their_users():
    users = frozenset(str(n) for n in range(1000))
    audience = Audience(users=users, groups=frozenset({2}))
    published = dict(copies(audience))
    assert published[partition_of(group=2)] == audience
    carried = [part for p, part in published.items() if isinstance(p, str)]
    # Not the whole audience in each of 1,000 copies: each user once.
    assert sum(len(part.users) for part in carried) == 1000
    assert all(not part.groups for part in carried)


def principal(user, groups=(), codenames=(), cts=(), superuser=False) -> Principal:
    permissions = Permissions.all() if superuser else Permissions(frozenset(cts))
    return Principal(
        str(user),
        f"user{user}",
        permissions,
        group_ids=frozenset(groups),
        codenames=frozenset(codenames),
    )


def test_a_connection_follows_its_users_groups_permissions_and_models():
    p = principal(7, groups=[3], codenames=["app.view_x"], cts=[11])
    assert followed(p) == {
        partition_of(user="7"),
        partition_of(group=3),
        partition_of(permission="app.view_x"),
        partition_of(content_type=11),
    }
    # A superuser: every shared partition, never another user's.
    assert followed(principal(1, superuser=True)) == frozenset(range(PARTITIONS)) | {
        partition_of(user="1")
    }


def test_every_connection_takes_every_event_once_whatever_the_copy():
    """The rule of the lowest partition, against a brute-force model."""
    rng = random.Random(16)
    principals = [
        principal(
            n,
            groups=rng.sample(range(6), rng.randint(0, 2)),
            codenames=rng.sample(["a.p1", "a.p2", "a.p3"], rng.randint(0, 2)),
            cts=rng.sample(range(4), rng.randint(0, 2)),
            superuser=n % 13 == 0,
        )
        for n in range(40)
    ]
    router: Router[int] = Router()
    for connection, p in enumerate(principals):
        router.add(connection, p)
    delivery = Delivery(router, max_buffer=1 << 20)
    for _ in range(300):
        audience = Audience(
            users=frozenset(str(n) for n in rng.sample(range(45), rng.randint(0, 4))),
            groups=frozenset(rng.sample(range(6), rng.randint(0, 2))),
            permissions=frozenset(
                rng.sample(["a.p1", "a.p2", "a.p3"], rng.randint(0, 2))
            ),
            content_types=frozenset(rng.sample(range(4), rng.randint(0, 2))),
        )
        if not audience:
            continue
        received: list[int] = []
        for partition, carried in copies(audience):
            event = delivery.accept(
                b"@" + carried.to_json().encode() + b'\n{"event":"x"}', 0, partition
            )
            [send], _ = delivery.route([event])
            received.extend(send.connections)
        expected = [c for c, p in enumerate(principals) if audience.allows(p)]
        assert sorted(received) == expected


def test_routed_keeps_only_the_partitions_targets():
    audience = Audience(users=frozenset({"1", "2"}))
    for partition, part in copies(audience):
        own, excluded = routed(part, partition)
        assert own == part and excluded is None
    other = next(
        p for p in range(PARTITIONS) if p not in {p for p, _ in copies(audience)}
    )
    assert not routed(audience, other)[0]


def test_a_copy_on_a_partition_without_its_targets_is_refused():
    router: Router[int] = Router()
    delivery = Delivery(router, max_buffer=1 << 20)
    partition = partition_of(user="1")
    wrong = partition_of(user="2")
    from wsserver.events import InvalidEvent

    with pytest.raises(InvalidEvent, match="partition"):
        delivery.accept(b'@{"users":["1"]}\n{"event":"x"}', 0, wrong)
    assert isinstance(
        delivery.accept(b'@{"users":["1"]}\n{"event":"x"}', 0, partition), Event
    )


def test_interest_counts_connections_per_partition():
    changes = []
    interest = Interest()
    interest.on_change = lambda: changes.append(interest.wanted)
    alice, bob = principal(1), principal(2)
    router: Router[str] = Router(interest)
    router.add("a1", alice)
    router.add("a2", alice)
    router.add("b", bob)
    assert interest.wanted == followed(alice) | followed(bob)
    router.remove("a1")
    assert interest.wanted == followed(alice) | followed(bob)
    router.remove("a2")
    assert interest.wanted == followed(bob)
    # A change of access moves the connection's partitions.
    router.update("b", principal(2, groups=[9]))
    assert interest.wanted == followed(principal(2, groups=[9]))
    router.remove("b")
    assert interest.wanted == frozenset()
    assert changes and changes[-1] == frozenset()
    # Pins add to the counts and come off without touching others.
    interest.pin({1, 2})
    interest.pin({2})
    interest.unpin({2})
    assert interest.wanted == {1, 2}
    interest.unpin({1, 2, 3})
    assert interest.wanted == frozenset()
