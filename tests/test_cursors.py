"""wsserver.cursors: a Redis Cluster client's position in every partition."""

from __future__ import annotations

import pytest

from wsserver.cursors import (
    CLOCK_MARGIN,
    MAX_CURSOR_LENGTH,
    InvalidCursor,
    cursor_since,
    cursor_starts,
    parse_cursor,
)
from wsserver.hello import InvalidHello, parse_hello


def test_a_cursor_is_each_partitions_last_id():
    assert parse_cursor("3:10-0,17:12-4") == {3: (10, 0), 17: (12, 4)}
    assert parse_cursor("255:1-0") == {255: (1, 0)}
    assert parse_cursor("u1048575:3-0,0:1-0") == {"u1048575": (3, 0), 0: (1, 0)}


@pytest.mark.parametrize(
    "text",
    ["", "1-0", "3:1-0,3:2-0", "256:1-0", "3:x-0", "3:1-0,", ":1-0", "1234:1-0"],
)
def test_anything_else_is_refused(text):
    with pytest.raises(InvalidCursor):
        parse_cursor(text)


def test_the_longest_cursor_is_256_ids():
    ids = [f"{p}:{2**64 - 1}-{2**64 - 1}" for p in [*range(256), "u1048575"]]
    longest = ",".join(ids)
    assert len(longest) <= MAX_CURSOR_LENGTH
    assert len(parse_cursor(longest)) == 257
    with pytest.raises(InvalidCursor):
        parse_cursor(longest + "," + "x" * MAX_CURSOR_LENGTH)


def test_partitions_without_an_id_resume_from_the_newest_time_less_a_margin():
    newest = 100_000
    cursor = {3: (newest - 1000, 2), 17: (newest, 0), 8: (newest - 60_000, 0)}
    starts = cursor_starts(cursor, frozenset({3, 17, 40, 8}))
    since = (newest - CLOCK_MARGIN, 0)
    assert cursor_since(cursor) == since
    assert starts == {
        3: ((newest - 1000, 2), True),
        17: ((newest, 0), True),
        40: (since, False),
        # Old, but exact while the stream has it (ClusterHistory falls back
        # to the cursor's time when it no longer does).
        8: ((newest - 60_000, 0), True),
    }
    # Partitions no longer followed are not resumed.
    assert set(cursor_starts({3: (1, 0)}, frozenset({5}))) == {5}


def test_the_first_message_takes_a_cursor():
    hello = parse_hello('{"token": "t", "last_event_id": "3:1-0,4:2-0"}')
    assert hello.last_event_id == "3:1-0,4:2-0"
    with pytest.raises(InvalidHello, match="cursor"):
        parse_hello('{"token": "t", "last_event_id": "3:1-0,3:1-0"}')
