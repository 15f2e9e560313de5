"""The Redis subscriber: hands every message of the channel to a callback.

It survives Redis outages: when Redis cannot be reached, at start-up or later,
it logs why, retries with capped, jittered exponential backoff and subscribes
again. Client connections are not affected; events published while the
subscription is down are not received (pub/sub keeps nothing): after each
subscription but the first, ``on_subscribed`` lets the server recheck what
the missed messages might have changed.

It survives bad messages: a handler that raises is logged, counted (as an
invalid bus message) and skipped; the next message is handled as usual.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .counters import Counters
from .logs import mask_url

__all__ = ["Subscriber", "backoff_delays"]

logger = logging.getLogger("wsserver.bus")

# How often the subscriber checks that Redis still answers when no message
# arrives: a connection that died silently is noticed within this delay.
HEALTH_CHECK_INTERVAL = 5
READ_TIMEOUT = 1.0
CLOSE_TIMEOUT = 2.0
SUBSCRIBE_TIMEOUT = 5.0


def backoff_delays(
    minimum: float = 0.2,
    maximum: float = 5.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Capped exponential delays, each jittered down by up to half."""
    delay = minimum
    while True:
        yield delay * (0.5 + rand() / 2)
        delay = min(delay * 2, maximum)


class CatchingUp(Protocol):
    """What the subscriber calls to read the history (see wsserver.server)."""

    async def start(self) -> None:
        """Before subscribing: note where the history is, the first time."""

    async def backfill(self) -> None:
        """Once subscribed: pass on what was missed since the last event."""


class Subscriber:
    """Subscribe to one Redis pub/sub channel, forever."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[bytes], None],
        *,
        on_control: Callable[[bytes], Awaitable[None] | None] | None = None,
        control_channel: str | None = None,
        on_subscribed: Callable[[], Awaitable[None] | None] | None = None,
        counters: Counters | None = None,
        catchup: CatchingUp | None = None,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.url = url
        self.channel = channel
        self.on_message = on_message
        # Control messages (access changes) come on a second channel of the
        # same connection, so they stay in order with events; a handler that
        # returns an awaitable holds the events after it until it is done.
        self.handlers: dict[bytes, Callable[[bytes], Awaitable[None] | None]] = {
            channel.encode(): on_message
        }
        if on_control is not None and control_channel is not None:
            self.handlers[control_channel.encode()] = on_control
        self.on_subscribed = on_subscribed
        # Reads what was missed from the history, after each subscription.
        self.catchup = catchup
        self.subscribed = False
        # Reconnections, and messages whose handler failed (counted invalid).
        self.counters = Counters() if counters is None else counters
        self._reconnecting = False
        self._had_subscription = False
        self._subscribed_event = asyncio.Event()
        # How to make a client, given its options (Sentinel: the master's).
        self.connect: Callable[..., Any] = connect or functools.partial(
            aioredis.Redis.from_url, url
        )

    async def wait_subscribed(self) -> None:
        """Return once the subscription is up (at once if it is now)."""
        await self._subscribed_event.wait()

    async def run(self) -> None:
        """Receive messages until cancelled, reconnecting after any failure."""
        delays = backoff_delays()
        failures = 0
        while True:
            self._had_subscription = False
            try:
                await self._receive()
            except Exception as exc:
                # Redis, OS and timeout errors, and anything else: never leave
                # the process without a subscription.
                if self._had_subscription:  # a new outage: start over
                    delays = backoff_delays()
                    failures = 0
                failures += 1
                delay = next(delays)
                log = logger.warning if failures == 1 else logger.info
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    log = logger.exception
                log(
                    "Redis at %s unreachable (%s); events are not received. "
                    "Retrying in %.1f s",
                    mask_url(self.url),
                    exc or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                self.counters.bus_reconnects += 1
                self._reconnecting = True
            else:  # pragma: no cover - _receive only returns on failure
                return

    async def _receive(self) -> None:
        client = self.connect(
            health_check_interval=HEALTH_CHECK_INTERVAL,
            socket_connect_timeout=5,
            socket_keepalive=True,
            # A reconnection must not go unnoticed: what went by meanwhile
            # is read from the history.
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = client.pubsub()
        try:
            if self.catchup is not None:
                await self.catchup.start()
            await pubsub.subscribe(*self.handlers)
            pending = set(self.handlers)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                while pending:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT)
                    if message is not None and message["type"] == "subscribe":
                        pending.discard(message["channel"])
            if self._reconnecting and self.on_subscribed is not None:
                # Before any message, missed ones included: what was missed
                # may have revoked access.
                await self._call(self.on_subscribed)
            if self.catchup is not None:
                # Subscribed: what is published from now on arrives live,
                # and what came before is in the history.
                await self.catchup.backfill()
            self._set_subscribed(True)
            self._had_subscription = True
            (logger.warning if self._reconnecting else logger.info)(
                "Subscribed to channel %r on Redis at %s",
                self.channel,
                mask_url(self.url),
            )
            task = asyncio.current_task()
            while True:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
                if task is not None and task.cancelling():
                    # redis-py can swallow a cancellation (get_message()
                    # returns None as if its read timed out): honour it, or
                    # shutdown waits for this loop forever.
                    raise asyncio.CancelledError
                if message is None or message["type"] != "message":
                    continue
                await self._handle(message["channel"], message["data"])
        finally:
            self._set_subscribed(False)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pubsub.aclose()
                    await client.aclose()
            except Exception:  # closing a dead connection may fail, or hang
                pass

    async def _handle(self, channel: bytes, data: bytes) -> None:
        """One message, whatever it holds: an error skips it, never the rest."""
        if not await self._call(self.handlers[channel], data):
            logger.error("Skipped a message on %r: %.100r", channel, data)

    async def _call(
        self, handler: Callable[..., Awaitable[None] | None], *args
    ) -> bool:
        """Run a handler and what it returns to wait for; False if it raised."""
        try:
            result = handler(*args)
            if result is not None:
                await result
        except Exception:
            self.counters.bus_events["invalid"] += 1
            logger.exception("A handler of the Redis subscriber failed")
            return False
        return True

    def _set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed
        if subscribed:
            self._subscribed_event.set()
        else:
            self._subscribed_event.clear()
