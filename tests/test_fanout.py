"""The fan-out with stand-in connections: what is written, to whom, and the
buffer bound, with and without compression."""

from __future__ import annotations

import asyncio

import pytest
from websockets.protocol import State

from wsserver.closes import CLIENT_TOO_SLOW
from wsserver.counters import Counters
from wsserver.delivery import Delivery
from wsserver.events import Event, content_type_audience
from wsserver.fanout import Fanout, text_frame
from wsserver.routing import Permissions, Principal, Router


class Transport:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)

    def get_write_buffer_size(self):  # the client reads nothing
        return sum(map(len, self.written))


class Connection:
    """What Fanout uses of a SidecarConnection; compressed writes are the
    payload as is."""

    def __init__(self, name, closed, state=State.OPEN):
        self.name = self.id = name
        self.protocol = type("Protocol", (), {"state": state})()
        self.transport = Transport()
        self.closed = closed

    def close_soon(self, code, reason):
        assert (code, reason) == CLIENT_TOO_SLOW
        self.closed.append(self)

    def send_text_now(self, payload):
        if self.protocol.state is not State.OPEN:
            return False
        self.transport.write(payload)
        return True

    def __repr__(self):
        return self.name


def setup(compression: bool, max_buffer: int = 100):
    """A fan-out, its router, three connections, and those closed as slow."""
    router = Router()
    slow = []
    delivery = Delivery(router, max_buffer=max_buffer)
    fanout = Fanout(delivery, Counters(), compression=compression)
    connections = {
        name: Connection(name, slow) for name in ["reader", "closing", "other user"]
    }
    connections["closing"].protocol.state = State.CLOSING
    for user_id, (name, content_type) in enumerate(
        [("reader", 1), ("closing", 1), ("other user", 2)], start=1
    ):
        permissions = Permissions(frozenset({content_type}))
        router.add(connections[name], Principal(str(user_id), name, permissions))
    return fanout, router, connections, slow


@pytest.mark.parametrize("compression", [False, True])
def test_deliveries_count_open_recipients_only(compression):
    fanout, _, connections, slow = setup(compression)
    fanout._pending = [Event(content_type_audience(1), b'{"a":1}')]
    fanout.flush()
    assert fanout.counters.deliveries == 1
    expected = b'{"a":1}' if compression else text_frame(b'{"a":1}')
    assert connections["reader"].transport.written == [expected]
    assert connections["closing"].transport.written == []
    assert connections["other user"].transport.written == []
    assert slow == []


@pytest.mark.parametrize("compression", [False, True])
@pytest.mark.parametrize("burst", [1, 3])
def test_a_client_past_the_buffer_bound_is_dropped(compression, burst):
    fanout, router, connections, slow = setup(compression, max_buffer=100)
    for _ in range(4):
        fanout._pending = [
            Event(content_type_audience(1), b"x" * 30) for _ in range(burst)
        ]
        fanout.flush()
    reader = connections["reader"]
    assert slow == [reader]
    assert reader not in router
    assert reader.transport.get_write_buffer_size() <= 100 + 3 * 32


def test_write_keeps_the_bound_for_resumes():
    fanout, _, connections, slow = setup(True, max_buffer=100)
    reader = connections["reader"]
    assert fanout.write(reader, [b"a" * 50])
    assert not fanout.write(reader, [b"b" * 60])
    assert slow == [reader]
    assert not fanout.write(connections["closing"], [b"c"])


async def test_events_submitted_together_are_written_together():
    fanout, _, connections, _ = setup(False, max_buffer=10_000)
    for n in range(3):
        fanout.submit(Event(content_type_audience(1), b'{"n":%d}' % n))
    await asyncio.sleep(0)
    assert connections["reader"].transport.written == [
        b"".join(text_frame(b'{"n":%d}' % n) for n in range(3))
    ]
    assert fanout.counters.deliveries == 3


def test_a_compressed_burst_stops_at_the_bound():
    # Each message goes through the connection's compressor: once one passes
    # the bound, the rest of the burst is not written, nor counted.
    fanout, router, connections, slow = setup(True, max_buffer=100)
    fanout._pending = [Event(content_type_audience(1), b"x" * 30) for _ in range(10)]
    fanout.flush()
    reader = connections["reader"]
    assert reader.transport.written == [b"x" * 30] * 4
    assert fanout.counters.deliveries == 4
    assert slow == [reader] and reader not in router
