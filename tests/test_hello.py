"""The client's first message (wsserver.hello)."""

from __future__ import annotations

import pytest

from wsserver.hello import Hello, InvalidHello, parse_hello


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
