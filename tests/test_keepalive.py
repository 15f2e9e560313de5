"""The keepalive round, with stand-in connections: who is pinged, closed, aborted."""

from __future__ import annotations

import asyncio

from wsserver.closes import CONNECTION_EXPIRED, KEEPALIVE_TIMEOUT
from wsserver.keepalive import Keepalive

# What the keepalive did, as the tests note it: ("stalled", name) for an
# abort, ("expired", name) and ("no pong", name) for closes.
WHAT = {CONNECTION_EXPIRED: "expired", KEEPALIVE_TIMEOUT: "no pong"}


class Connection:
    """What Keepalive uses of a SidecarConnection."""

    def __init__(self, name, *, open=True, stalled=0.0, expires_at=None):
        self.name = self.id = name
        self.is_open = open
        self.stalled = stalled
        self.expires_at = expires_at
        self.pings = []
        self.transport = self
        self.registered = True

    def get_write_buffer_size(self):
        return 0

    def close_soon(self, code, reason):
        assert not self.registered, "closed before it was unregistered"
        self.events.append((WHAT[code, reason], self.name))

    def abort(self):
        assert not self.registered, "aborted before it was unregistered"
        self.events.append(("stalled", self.name))

    def stalled_for(self, now):
        return self.stalled

    def send_ping_now(self):
        pong = asyncio.get_running_loop().create_future()
        self.pings.append(pong)
        return pong

    def __repr__(self):
        return self.name


def keepalive(connections, events, **options):
    for connection in connections:
        connection.events = events

    def unregister(connection):
        connection.registered = False

    return Keepalive(
        lambda: connections,
        interval=options.get("interval", 20),
        timeout=options.get("timeout", 20),
        unregister=unregister,
    )


async def test_each_connection_is_pinged_aborted_or_expired_never_waited_on():
    now = asyncio.get_running_loop().time()
    healthy = Connection("healthy")
    stalled = Connection("stalled", stalled=20.0)
    almost = Connection("almost stalled", stalled=19.0)
    old = Connection("old", expires_at=now - 1)
    closing = Connection("closing", open=False)
    events = []
    waiting = await keepalive(
        [healthy, stalled, almost, old, closing], events
    ).ping_round()
    assert events == [("stalled", "stalled"), ("expired", "old")]
    assert [connection for connection, _ in waiting] == [healthy, almost]
    assert not closing.pings


async def test_those_that_do_not_answer_in_time_are_closed():
    answers, mute, gone = Connection("answers"), Connection("mute"), Connection("gone")
    events = []
    alive = keepalive([answers, mute, gone], events)
    waiting = await alive.ping_round()
    answers.pings[0].set_result(0.001)
    gone.is_open = False  # closed meanwhile: nothing more to do
    alive.check_pongs(waiting)
    assert events == [("no pong", "mute")]


async def test_without_pings_rounds_still_catch_stalled_and_expired_connections():
    stalled = Connection("stalled", stalled=30.0)
    idle = Connection("idle")
    events = []
    waiting = await keepalive([stalled, idle], events, interval=None).ping_round()
    assert waiting == []
    assert events == [("stalled", "stalled")]
    assert not idle.pings


async def test_many_connections_let_the_event_loop_run_in_between():
    connections = [Connection(str(n)) for n in range(1000)]
    ran = []
    asyncio.get_running_loop().call_soon(ran.append, "other work")
    waiting = await keepalive(connections, []).ping_round()
    assert len(waiting) == 1000 and ran == ["other work"]
