"""The keepalive round, with stand-in connections: who is pinged, closed, aborted."""

from __future__ import annotations

import asyncio
import itertools

from wsserver.closes import CONNECTION_EXPIRED, KEEPALIVE_TIMEOUT
from wsserver.keepalive import Keepalive, ping_frame

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
        self.ping_sent_at = None
        self.transport = self
        self.registered = True

    def get_write_buffer_size(self):
        return 0

    def stalled_for(self, now):
        return self.stalled

    def send_keepalive_ping(self, frame, data, now):
        self.pings.append((frame, data))
        if self.ping_sent_at is None:
            self.ping_sent_at = now
        return True

    def pong(self):
        self.ping_sent_at = None

    def ping_sent_before(self, when):
        return self.ping_sent_at is not None and self.ping_sent_at <= when

    def close_soon(self, code, reason):
        assert not self.registered, "closed before it was unregistered"
        self.events.append((WHAT[code, reason], self.name))
        self.is_open = False

    def abort(self):
        assert not self.registered, "aborted before it was unregistered"
        self.events.append(("stalled", self.name))
        self.is_open = False

    def __repr__(self):
        return self.name


class Clock:
    """A clock that sleeping advances: the rounds' schedule, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


def keepalive(connections, events, **options):
    for connection in connections:
        connection.events = events

    def unregister(connection):
        connection.registered = False

    alive = Keepalive(
        lambda: connections,
        interval=options.get("interval", 20),
        timeout=options.get("timeout", 20),
        unregister=unregister,
    )
    # run() on a clock that sleeping advances (ping_round() alone does not
    # use it).
    alive.clock = Clock()
    alive.time, alive.sleep = alive.clock.time, alive.clock.sleep
    return alive


async def run_until(alive: Keepalive, moment: float) -> None:
    """Run the keepalive loop until its clock reaches ``moment``."""
    task = asyncio.create_task(alive.run())
    while alive.clock.now < moment:
        await asyncio.sleep(0)
    task.cancel()


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
    assert waiting == [healthy, almost]
    assert not closing.pings
    # Each connection its own data: one cannot answer for another.
    (frame, data), (other_frame, other_data) = healthy.pings[0], almost.pings[0]
    assert data != other_data and len(data) == 4
    assert frame == ping_frame(data) and other_frame == ping_frame(other_data)


async def test_those_that_do_not_answer_in_time_are_closed():
    answers, mute, gone = Connection("answers"), Connection("mute"), Connection("gone")
    events = []
    alive = keepalive([answers, mute, gone], events, timeout=5)
    now = asyncio.get_running_loop().time()
    waiting = await alive.ping_round()
    answers.pong()
    gone.is_open = False  # closed meanwhile: nothing more to do
    alive.check_pongs(waiting, now + 1)
    assert events == []  # not yet
    alive.check_pongs(waiting, now + 5)
    assert events == [("no pong", "mute")]


async def test_rounds_come_every_interval_and_late_pongs_are_closed_in_time():
    answers, mute = Connection("answers"), Connection("mute")
    events = []
    alive = keepalive([answers, mute], events, interval=20, timeout=5)
    clock = alive.clock
    pinged_at, closed_at = [], []

    def note_pings(frame, data, now):
        pinged_at.append(now)
        answers.pong()  # answered at once
        return True

    answers.send_keepalive_ping = note_pings

    def unregister(connection):
        connection.registered = False
        closed_at.append(clock.now)

    alive.unregister = unregister
    await run_until(alive, 65)
    # On a fixed cadence of WS_PING_INTERVAL: not interval + timeout.
    assert pinged_at == [20, 40, 60]
    # Pinged once, closed WS_PING_TIMEOUT after, never pinged again.
    assert len(mute.pings) == 1
    assert events == [("no pong", "mute")]
    assert closed_at == [25]


async def test_a_connection_with_a_ping_unanswered_is_not_pinged_again():
    late = Connection("late")
    alive = keepalive([late], [])
    assert await alive.ping_round() == [late]
    assert await alive.ping_round() == []
    late.pong()
    assert await alive.ping_round() == [late]
    assert len(late.pings) == 2


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


async def test_each_round_pings_with_new_random_data():
    # A client must read its ping to answer it: data it could guess (a round
    # number) would let one that reads nothing pass for alive.
    datas = []
    for _ in range(2):  # two processes, or a restarted one
        connection = Connection("c")
        alive = keepalive([connection], [])
        for _ in range(2):
            await alive.ping_round()
            datas.append(connection.pings[-1][1])
            connection.pong()
    assert len(set(datas)) == 4 and all(len(data) == 4 for data in datas)


async def test_a_restarted_loop_pings_again_those_whose_ping_it_lost():
    dead = Connection("dead")
    dead.ping_sent_at = 1.0  # pinged by a run() that crashed before checking
    events = []
    alive = keepalive([dead], events, interval=20, timeout=5)
    await run_until(alive, 30)
    assert len(dead.pings) == 1
    assert events == [("no pong", "dead")]


async def test_rounds_that_fall_behind_are_not_made_up_and_checks_keep_up():
    stalled, mute = Connection("stalled"), Connection("mute")
    events = []
    alive = keepalive([stalled, mute], events, interval=20, timeout=5)
    clock = alive.clock
    closed_at, rounds = [], []

    def ping(frame, data, now):
        rounds.append(clock.now)
        if len(rounds) == 1:
            clock.now += 100  # the event loop blocked once, for 100 s
        stalled.pong()
        return True

    def unregister(connection):
        connection.registered = False
        closed_at.append(clock.now)

    stalled.send_keepalive_ping, alive.unregister = ping, unregister
    await run_until(alive, 200)
    # No burst of rounds to make up for the missed ones: after a round that
    # overran, the loop rests a period.
    assert rounds[:3] == [20, 140, 160]
    # And the check of the mute connection's ping is not put off.
    assert events == [("no pong", "mute")] and closed_at == [125]


async def test_rounds_that_take_longer_than_the_period_are_not_back_to_back():
    busy = Connection("busy")
    alive = keepalive([busy], [], interval=20, timeout=5)
    clock = alive.clock
    rounds = []

    def ping(frame, data, now):
        rounds.append(clock.now)
        clock.now += 25  # every round longer than the period
        busy.pong()
        return True

    busy.send_keepalive_ping = ping
    await run_until(alive, 200)
    # Each round ends 25 s after it starts; the next begins a period later.
    assert all(b - a >= 25 + 20 for a, b in itertools.pairwise(rounds))
