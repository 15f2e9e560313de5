"""Validation of bus messages, on its own."""

import pytest

from wsserver.events import InvalidEvent, parse_event


def test_valid_event_keeps_the_payload_byte_for_byte():
    payload = b'{"model": "article",  "content_type_id": 7, "x": "\xc3\xa9"}'
    event = parse_event(payload)
    assert event.content_type_id == 7
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
