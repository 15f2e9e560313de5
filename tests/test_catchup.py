"""wsserver.catchup: after a lost subscription, nothing missed, nothing twice."""

from __future__ import annotations

from wsserver.audience import Audience
from wsserver.catchup import Catchup
from wsserver.counters import Counters
from wsserver.events import Event

AUDIENCE = Audience(users=frozenset({"1"}))


def event(event_id: str | None) -> Event:
    return Event(AUDIENCE, b"{}", event_id)


def test_live_events_advance_the_position_and_repeats_are_dropped():
    counters = Counters()
    catchup = Catchup(counters)
    catchup.follow(None, (5, 0))
    assert catchup.live(None, event("6-0"))
    assert not catchup.live(None, event("6-0"))
    assert not catchup.live(None, event("5-9"))
    assert catchup.position(None) == (6, 0)
    assert counters.bus_duplicates == 2
    # Published without history: never a duplicate, never a position.
    assert catchup.live(None, event(None))
    assert catchup.position(None) == (6, 0)


def test_a_backfill_sends_what_was_missed_then_what_was_held():
    catchup = Catchup(Counters())
    catchup.follow(7, (1, 0))
    catchup.hold(7)
    # Live events while the stream is read: held.
    assert not catchup.live(7, event("7:3-0"))
    assert not catchup.live(7, event("7:4-0"))
    # The stream has 2, 3 and 4: 3 and 4 are held already.
    assert [catchup.backfilled(7, event(i)) for i in ("7:2-0", "7:3-0", "7:4-0")] == [
        True,
        True,
        True,
    ]
    assert catchup.release(7) == []  # both were sent by the backfill
    assert catchup.live(7, event("7:5-0"))


def test_held_events_newer_than_the_backfill_are_released_in_order():
    catchup = Catchup(Counters())
    catchup.follow(None, (1, 0))
    catchup.hold(None)
    for i in (3, 4):
        catchup.live(None, event(f"{i}-0"))
    assert catchup.backfilled(None, event("2-0"))
    assert [e.id for e in catchup.release(None)] == ["3-0", "4-0"]
    assert not catchup.holding(None)


def test_a_hold_that_overflows_is_reported():
    catchup = Catchup(Counters(), max_held=2)
    catchup.follow(None, (0, 0))
    catchup.hold(None)
    for i in range(1, 5):
        catchup.live(None, event(f"{i}-0"))
    assert catchup.overflowed(None)


def test_rewind_and_jump():
    catchup = Catchup(Counters())
    catchup.follow(1, (10, 0))
    catchup.rewind(1, (8, 0))  # a failover to a replica behind
    assert catchup.position(1) == (8, 0)
    assert catchup.live(1, event("1:9-0"))
    catchup.jump(1, (20, 0))  # a gap the connections were told of
    assert not catchup.live(1, event("1:15-0"))
    catchup.forget(1)
    assert catchup.position(1) is None
