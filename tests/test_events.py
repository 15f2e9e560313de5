"""Validation of bus messages, on its own."""

import json

import pytest

from wsserver.audience import Audience
from wsserver.events import InvalidEvent, event_id_key, parse_event, with_id


def test_valid_event_keeps_the_payload_byte_for_byte():
    payload = b'{"model": "article",  "content_type_id": 7, "x": "\xc3\xa9"}'
    event = parse_event(payload)
    assert event.audience == Audience.of_content_type(7)
    assert event.payload is payload


def test_str_payload_is_encoded():
    assert parse_event('{"content_type_id": 3}').payload == b'{"content_type_id": 3}'


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"string"',
        b"null",
        b"{}",
        b'{"content_type_id": "7"}',
        b'{"content_type_id": 7.0}',
        b'{"content_type_id": true}',
        b'{"content_type_id": null}',
        b"\xff\xfe{}",
        '{"content_type_id": 1}'.encode("utf-16"),
    ],
)
def test_invalid_events_are_refused(payload):
    with pytest.raises(InvalidEvent):
        parse_event(payload)


@pytest.mark.parametrize(
    "event_id",
    [
        "9" * 400 + "-1",  # OverflowError in a float conversion, once
        "1-" + "9" * 5000,  # ValueError: past int()'s digit limit, once
        f"{2**64}-0",  # past a Redis Stream id's 64 bits
        "1-" + "0" * 40,
        "١٢-3",  # digits, but not ASCII
    ],
)
def test_ids_that_are_not_stream_ids_are_refused_cheaply(event_id):
    assert event_id_key(event_id) is None
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps({"content_type_id": 1, "id": event_id}))


def test_the_largest_stream_id():
    largest = f"{2**64 - 1}-{2**64 - 1}"
    assert event_id_key(largest) == (2**64 - 1, 2**64 - 1)
    assert parse_event(json.dumps({"content_type_id": 1, "id": largest})).id


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


def test_an_addressed_event_keeps_only_the_event_for_clients():
    event = b'{"id":"1-0","event":"export.ready","data":{"url":"/x"}}'
    parsed = parse_event(b'@{"users":["7"],"groups":[3]}\n' + event)
    assert parsed.payload == event
    assert parsed.id == "1-0"
    assert parsed.audience == Audience(users=frozenset({"7"}), groups=frozenset({3}))


@pytest.mark.parametrize(
    "message",
    [
        b'@{"users":["7"]}',  # no event
        b'@{"users":["7"]}\n',
        b'@{"users":["7"]}\n[1]',
        b'@{"users":["7"]}\n{"event":"x","id":"nope"}',
        b'@{"users":[7]}\n{"event":"x"}',
        b'@{}\n{"event":"x"}',
        b'@{"all":true}\n{"event":"x"}',
        b'@\n{"content_type_id":1}',
        b'@{"users":["7"]}\n{"event":"\xff"}',
    ],
)
def test_malformed_addressed_events_are_refused(message):
    with pytest.raises(InvalidEvent):
        parse_event(message)


def test_the_event_size_bound_applies_to_what_clients_receive():
    header = b'@{"users":["' + b"1" * 200 + b'"]}\n'
    event = b'{"event":"' + b"x" * 8 + b'"}'  # 20 bytes
    # The publisher's limit is without the id: an event at the limit passes
    # with the largest id inserted.
    largest = f"{2**64 - 1}-{2**64 - 1}"
    parse_event(header + with_id(event, largest), max_size=20)
    with pytest.raises(InvalidEvent, match="WS_MAX_EVENT_SIZE"):
        parse_event(header + with_id(b'{"event":"xxxxxxxxx"}', largest), max_size=20)
    with pytest.raises(InvalidEvent, match="WS_MAX_EVENT_SIZE"):
        parse_event(b'{"content_type_id":1,"x":"' + b"x" * 60 + b'"}', max_size=20)
