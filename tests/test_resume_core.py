"""The pure pieces of history and revocation: no sockets, Django or Redis."""

from __future__ import annotations

import pytest

from wsserver.control import (
    GroupChanged,
    InvalidControl,
    UsersChanged,
    parse_control,
)
from wsserver.events import Event, event_id_key, parse_event, with_id
from wsserver.hello import Hello, InvalidHello, parse_hello
from wsserver.resume import HeldTooMany, Resumes


def event(event_id: str | None) -> Event:
    return Event(1, b"{}", event_id)


def test_a_held_connection_queues_its_events_until_released():
    resumes = Resumes()
    resumes.hold("c")
    assert resumes
    assert not resumes.admit("c", event("1-0"))
    assert not resumes.admit("c", event("2-0"))
    assert [e.id for e in resumes.take("c")] == ["1-0", "2-0"]
    assert resumes.take("c") == []
    assert resumes.admit("other", event("3-0"))


def test_after_release_events_the_replay_covered_are_dropped():
    resumes = Resumes()
    resumes.hold("c")
    resumes.release("c", (5, 0))
    assert not resumes.admit("c", event("4-9"))
    assert not resumes.admit("c", event("5-0"))
    assert resumes.admit("c", event(None))  # never in the history
    assert resumes.admit("c", event("5-1"))
    assert resumes.admit("c", event("3-0"))  # the live stream is past 5-0
    assert not resumes


def test_a_newer_live_event_ends_deduplication_for_everyone():
    resumes = Resumes()
    for connection in "ab":
        resumes.hold(connection)
        resumes.release(connection, (5, 0))
    resumes.observe(event("6-0"))
    assert not resumes


def test_release_after_the_stream_moved_on_still_drops_what_is_on_its_way():
    # A bus message may claim any id (e.g. far in the future): it must not
    # keep later resumes from deduplicating.
    resumes = Resumes()
    resumes.observe(event("99999999999999-0"))
    resumes.hold("c")
    resumes.release("c", (5, 0))
    assert not resumes.admit("c", event("5-0"))
    assert resumes.admit("c", event("6-0"))
    assert not resumes


def test_each_position_ends_on_its_own():
    resumes = Resumes()
    for connection, position in [("a", (5, 0)), ("b", (8, 0))]:
        resumes.hold(connection)
        resumes.release(connection, position)
    resumes.observe(event("6-0"))
    assert resumes.admit("a", event("6-0"))
    assert not resumes.admit("b", event("7-0"))
    resumes.observe(event("9-0"))
    assert not resumes


def test_a_full_queue_raises():
    resumes = Resumes(max_held=2)
    resumes.hold("c")
    resumes.admit("c", event("1-0"))
    resumes.admit("c", event("2-0"))
    with pytest.raises(HeldTooMany):
        resumes.admit("c", event("3-0"))
    resumes.forget("c")
    assert not resumes


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("1700000000000-3", (1700000000000, 3)),
        ("0-0", (0, 0)),
        ("1-", None),
        ("-1", None),
        ("a-1", None),
        ("1-1-1", None),
        ("\u0661-\u0662", None),  # Unicode digits
        (5, None),
        (None, None),
    ],
)
def test_event_id_key(value, key):
    assert event_id_key(value) == key


def test_ids_are_parsed_and_inserted_first():
    payload = with_id(b'{"content_type_id": 3}', "12-0")
    assert payload == b'{"id":"12-0","content_type_id": 3}'
    assert parse_event(payload).id == "12-0"
    assert parse_event(b'{"content_type_id": 3}').id is None


@pytest.mark.parametrize(
    ("message", "hello"),
    [
        ("  token  ", Hello("token")),
        ('{"token": "t"}', Hello("t")),
        ('{"token": "t", "last_event_id": "1-2"}', Hello("t", "1-2")),
        ('{"token": "t", "last_event_id": null}', Hello("t")),
    ],
)
def test_first_messages(message, hello):
    assert parse_hello(message) == hello


@pytest.mark.parametrize(
    "message",
    ["{", "{}", '{"token": 3}', '{"token": "t", "last_event_id": 1}', "{[]}"],
)
def test_invalid_first_messages(message):
    with pytest.raises(InvalidHello):
        parse_hello(message)


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
