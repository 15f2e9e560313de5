"""The Redis subscriber against a real Redis: stopping it always works."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.client import PubSub
from waiting import eventually

from wsserver.bus import Subscriber

pytestmark = pytest.mark.e2e


async def test_the_subscriber_stops_even_if_redis_py_swallows_the_cancellation(
    redis_url, monkeypatch
):
    # Seen at shutdown with redis-py 8.1: the cancellation landed in
    # get_message(), which returned None as if its read had timed out; the
    # subscriber read on and its worker process never exited. Fault
    # injection: get_message() swallows the first cancellation it receives.
    read = PubSub.get_message
    swallowed = []
    reading = []

    async def get_message_swallowing_a_cancellation(self, *args, **kwargs):
        reading.append(True)
        try:
            return await read(self, *args, **kwargs)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)
            return None
        finally:
            reading.pop()

    monkeypatch.setattr(PubSub, "get_message", get_message_swallowing_a_cancellation)
    subscriber = Subscriber(redis_url, "bus-test", lambda payload: None)
    task = asyncio.create_task(subscriber.run())
    await subscriber.wait_subscribed()
    # Cancel while it reads, so that the cancellation lands in get_message().
    await eventually(lambda: reading, 5, "reading", interval=0.01, in_thread=False)
    task.cancel()
    # Well under the 5 s health check, which would end it by chance.
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # a second cancellation does get through: clean up
        await asyncio.wait({task})
    assert done == {task}
    assert task.cancelled()
    assert swallowed == [True]
    assert not subscriber.subscribed
