"""The delivery core on its own: no sockets, asyncio, websockets or Redis.

Connections are plain names; what the core decides is checked directly:
which payloads go to which connections, who is too slow, what a resume sends.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wsserver.delivery
from wsserver.audience import Audience
from wsserver.delivery import MAX_CLOCK_SKEW, Delivery
from wsserver.events import Event, InvalidEvent, content_type_audience
from wsserver.routing import Permissions, Principal, Router


def principal(user_id: str, *content_types: int, everything=False) -> Principal:
    permissions = (
        Permissions.all() if everything else Permissions(frozenset(content_types))
    )
    return Principal(user_id, user_id, permissions)


def delivery_with(**principals: Principal) -> Delivery[str]:
    """A delivery core with one connection per keyword, named after it."""
    delivery: Delivery[str] = Delivery(Router(), max_buffer=100, max_held=3)
    for connection, p in principals.items():
        delivery.register(connection, p)
    return delivery


def writes(sends) -> dict[str, list[bytes]]:
    """What each connection is sent, from route()'s sends."""
    result: dict[str, list[bytes]] = {}
    for send in sends:
        for connection in send.connections:
            assert connection not in result, "one write per connection"
            result[connection] = list(send.payloads)
    return result


ct = content_type_audience


def event(content_type: int, n: int, event_id: str | None = None) -> Event:
    return Event(content_type_audience(content_type), b'{"n":%d}' % n, event_id)


def test_the_core_does_no_io():
    source = Path(wsserver.delivery.__file__).read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert not imported & {"asyncio", "websockets", "redis", "socket", "django"}


def test_an_event_goes_to_the_connections_that_may_see_it():
    delivery = delivery_with(
        viewer=principal("1", 7),
        other=principal("2", 8),
        admin=principal("3", everything=True),
    )
    sends, overflowed = delivery.route([event(7, 1)])
    assert writes(sends) == {"viewer": [b'{"n":1}'], "admin": [b'{"n":1}']}
    assert overflowed == []


def test_a_burst_is_one_write_per_connection_and_shared_between_equals():
    delivery = delivery_with(
        a=principal("1", 7),
        b=principal("2", 7),
        c=principal("3", 7, 8),
        d=principal("4"),
    )
    burst = [event(7, 1), event(8, 2), event(7, 3)]
    sends, _ = delivery.route(burst)
    assert writes(sends) == {
        "a": [b'{"n":1}', b'{"n":3}'],
        "b": [b'{"n":1}', b'{"n":3}'],
        "c": [b'{"n":1}', b'{"n":2}', b'{"n":3}'],
    }
    # a and b get the same events: the same write, framed once.
    assert sorted(len(list(send.connections)) for send in sends) == [1, 2]


def test_a_held_connection_gets_nothing_until_released_then_no_duplicate():
    delivery = delivery_with(resuming=principal("1", 7), live=principal("2", 7))
    delivery.hold("resuming")
    sends, _ = delivery.route([event(7, 1, "10-0")])
    assert writes(sends) == {"live": [b'{"n":1}']}
    sends, _ = delivery.route([event(7, 2, "11-0"), event(7, 3, "12-0")])
    assert writes(sends) == {"live": [b'{"n":2}', b'{"n":3}']}
    # The replay covered up to 11-0: of what was held, only 12-0 is left.
    held = delivery.take_held("resuming", (11, 0))
    assert [e.id for e in held] == ["12-0"]
    assert delivery.take_held("resuming", (11, 0)) == []
    delivery.release("resuming", (12, 0))
    # 12-0 again (the subscriber lagging behind the replay): not sent twice.
    sends, _ = delivery.route([event(7, 3, "12-0")])
    assert writes(sends) == {"live": [b'{"n":3}']}
    sends, _ = delivery.route([event(7, 4, "13-0")])
    assert writes(sends) == {"live": [b'{"n":4}'], "resuming": [b'{"n":4}']}


def test_a_held_connection_whose_queue_overflows_is_too_slow():
    delivery = delivery_with(resuming=principal("1", 7), live=principal("2", 7))
    delivery.hold("resuming")
    for n in range(3):
        _, overflowed = delivery.route([event(7, n)])
        assert overflowed == []
    sends, overflowed = delivery.route([event(7, 3), event(7, 4)])
    assert overflowed == ["resuming"]
    assert "resuming" not in delivery.router
    assert writes(sends) == {"live": [b'{"n":3}', b'{"n":4}']}
    assert delivery.take_held("resuming", None) == []


def test_a_connection_past_the_buffer_bound_is_too_slow_and_unregistered():
    delivery = delivery_with(reader=principal("1", 7))
    assert not delivery.too_slow("reader", 100)
    assert "reader" in delivery.router
    assert delivery.too_slow("reader", 101)
    assert "reader" not in delivery.router
    sends, _ = delivery.route([event(7, 1)])
    assert writes(sends) == {}


def test_unregister_forgets_everything_once():
    delivery = delivery_with(resuming=principal("1", 7))
    delivery.hold("resuming")
    delivery.route([event(7, 1)])
    assert delivery.unregister("resuming") == principal("1", 7)
    assert delivery.unregister("resuming") is None
    assert not delivery.resumes
    assert delivery.take_held("resuming", None) == []


def test_resume_batches_are_bounded_and_filtered_as_access_is_at_each():
    delivery = delivery_with(resuming=principal("1", 7, 8))
    missed = [
        (ct(7), b"a" * 40),
        (ct(8), b"b" * 40),
        (ct(7), b"c" * 40),
        (ct(8), b"d" * 40),
    ]
    batches = delivery.resume_batches("resuming", missed, size=80)
    assert next(batches) == [b"a" * 40, b"b" * 40]
    # Access to content type 8 is withdrawn while the first batch is read.
    delivery.router.update("resuming", principal("1", 7))
    assert next(batches) == [b"c" * 40]
    assert list(batches) == []


def test_resume_batches_stop_once_unregistered_and_skip_what_cannot_be_sent():
    delivery = delivery_with(resuming=principal("1", 7))
    missed = [(ct(7), b"x" * 200), (ct(7), b"a"), (ct(7), b"b")]
    batches = delivery.resume_batches("resuming", missed, size=1)
    # 200 bytes: more than WS_MAX_EVENT_SIZE (max_buffer here), id or not.
    assert next(batches) == [b"a"]
    delivery.unregister("resuming")
    assert list(batches) == []


def test_accept_refuses_what_no_client_could_be_sent():
    delivery = delivery_with()
    now = 1_700_000_000.0
    assert delivery.accept(b'{"content_type_id":1,"id":"1-0"}', now).id == "1-0"
    with pytest.raises(InvalidEvent, match="more than WS_MAX_EVENT_SIZE"):
        delivery.accept(b'{"content_type_id":1,"x":"' + b"x" * 200 + b'"}', now)
    future = int((now + MAX_CLOCK_SKEW + 1) * 1000)
    with pytest.raises(InvalidEvent, match="in the future"):
        delivery.accept(b'{"content_type_id":1,"id":"%d-0"}' % future, now)
    with pytest.raises(InvalidEvent):
        delivery.accept(b"[]", now)


def test_addressed_events_reach_their_audience_and_resume_rechecks_it():
    delivery = delivery_with(
        alice=Principal("1", "alice", Permissions(), group_ids=frozenset({3})),
        bob=Principal("2", "bob", Permissions(), codenames=frozenset({"a.b"})),
        root=principal("3", everything=True),
    )
    to_alice = Event(Audience(users=frozenset({"1"})), b"1")
    to_group = Event(Audience(groups=frozenset({3})), b"2")
    by_permission = Event(Audience(permissions=frozenset({"a.b"})), b"3")
    sends, _ = delivery.route([to_alice, to_group, by_permission])
    assert writes(sends) == {
        "alice": [b"1", b"2"],
        "bob": [b"3"],
        "root": [b"3"],
    }
    missed = [(e.audience, e.payload) for e in (to_alice, to_group, by_permission)]
    # Alice left group 3 before resuming.
    delivery.router.update("alice", Principal("1", "alice", Permissions()))
    assert list(delivery.resume_batches("alice", missed, size=100)) == [[b"1"]]
    assert list(delivery.resume_batches("root", missed, size=100)) == [[b"3"]]
