"""Resumes on their own: no gap and no duplicate at the seam (wsserver.resume)."""

from __future__ import annotations

import pytest

from wsserver.events import Event, content_type_audience
from wsserver.resume import HeldTooMany, Resumes


def event(event_id: str | None) -> Event:
    return Event(content_type_audience(1), b"{}", event_id)


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


def test_on_a_cluster_each_partition_is_deduplicated_on_its_own():
    resumes = Resumes()
    resumes.hold("c")
    assert not resumes.admit("c", event("3:4-0"))
    assert not resumes.admit("c", event("9:1-0"))
    # The replay covered partition 3 up to 5-0 and partition 9 up to 2-0.
    after = {3: (5, 0), 9: (2, 0)}
    assert [e.id for e in resumes.take("c", after)] == []
    resumes.release("c", after)
    # Ids of partition 9 are smaller than 3's: they are compared with 9's.
    resumes.observe(event("9:3-0"))
    assert resumes.admit("c", event("9:3-0"))
    resumes.observe(event("3:5-0"))
    assert not resumes.admit("c", event("3:5-0"))  # replayed
    resumes.observe(event("3:6-0"))
    assert resumes.admit("c", event("3:6-0"))
    assert not resumes  # past both positions: no more filtering
    # A partition the replay did not cover is never filtered.
    resumes.hold("d")
    resumes.release("d", {3: (5, 0)})
    assert resumes.admit("d", event("4:1-0"))
