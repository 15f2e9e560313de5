"""The Redis Cluster subscriber: the partitions this process needs, and only those.

A thin adapter: :mod:`wsserver.partitions` says which partitions the
connections follow (an :class:`~wsserver.partitions.Interest`), and
:mod:`wsserver.catchup` what was missed. This module keeps one sharded pub/sub
connection (``SSUBSCRIBE``) to each master that owns a wanted partition, plus
the control channel, and reconciles them with what is wanted whenever that
changes, whenever a subscription is lost, and every second.

A subscription is lost when its node's connection fails, when Redis says it
ended (an unsolicited ``SUNSUBSCRIBE``: the slot moved, or its master became
a replica), or when subscribing fails (``MOVED``, the cluster is down). The
slot map is then read again, the partition subscribed on its new owner, and
its stream read from the last event passed on: missed events are sent, or,
if the stream no longer has them, the connections that follow the partition
get ``resume_gap``. Never a quiet hole.

redis-py's cluster client gives the slot map and reads the streams (routed
by key, following ``MOVED``); each node's pub/sub connection is a plain
redis-py one, with its retries off so that no reconnection goes unnoticed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from . import backfill
from .bus import HEALTH_CHECK_INTERVAL, READ_TIMEOUT, backoff_delays
from .catchup import Catchup
from .counters import Counters
from .history import ClusterHistory, History, HistoryUnavailable
from .partitions import Interest, Partition, channel_of, history_key_of
from .redistarget import RedisTarget

__all__ = ["CONTROL", "ShardedSubscriber"]

logger = logging.getLogger("wsserver.bus")

# The control channel's key among the subscriptions (beside partitions).
CONTROL = None
Key = Partition | None
# The first byte of a control message's copy on a partition (an event's is
# "@" or "{").
CONTROL_MARK = b"!"
SUBSCRIBE_TIMEOUT = 5.0
CLOSE_TIMEOUT = 2.0
# How often subscriptions are reconciled when nothing asks for it.
RECONCILE_INTERVAL = 1.0
# Partitions attached at once (each takes a few round trips).
ATTACHING = 32
# Seconds before a partition was wanted from which its events are sent: a
# user granted access gets what the partition had since the grant (the
# recheck that applies it takes milliseconds).
GRANT_MARGIN = 0.25


class _Lost(Exception):
    """A node's pub/sub connection ended."""


class _Node:
    """One master's sharded pub/sub connection, and the channels on it."""

    def __init__(
        self,
        name: str,
        client: Redis,
        on_message: Callable[[Key, bytes], Awaitable[None]],
        on_lost: Callable[[_Node, list[Key], str], None],
    ) -> None:
        self.name = name
        self.client = client
        self.pubsub: PubSub = client.pubsub()
        self.channels: dict[bytes, Key] = {}
        # SUNSUBSCRIBEs sent and not yet confirmed, by channel: their replies
        # are not losses, even if the channel was subscribed again since.
        self._unsubscribing: dict[bytes, int] = {}
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._on_message = on_message
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        # redis-py's PubSub connects on its first command: one at a time, or
        # concurrent first commands would each open a connection.
        self._lock = asyncio.Lock()
        self.dead = False

    async def subscribe(self, channel: str, key: Key) -> None:
        """Subscribe and return once Redis confirmed it (raise if not)."""
        if self.dead:
            raise _Lost(f"connection to {self.name} lost")
        encoded = channel.encode()
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[encoded] = confirmed
        self.channels[encoded] = key
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                async with self._lock:
                    await self.pubsub.ssubscribe(encoded)
                    if self._task is None:
                        self._task = asyncio.create_task(self._read())
                await confirmed
        except BaseException:
            self._confirmations.pop(encoded, None)
            if not self.dead:
                self.channels.pop(encoded, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        encoded = channel.encode()
        if encoded in self.channels and not self.dead:
            del self.channels[encoded]
            self._unsubscribing[encoded] = self._unsubscribing.get(encoded, 0) + 1
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT), self._lock:
                await self.pubsub.sunsubscribe(encoded)

    async def _read(self) -> None:
        task = asyncio.current_task()
        try:
            while True:
                message = await self.pubsub.get_message(timeout=READ_TIMEOUT)
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                if message is None:
                    continue
                kind = message["type"]
                channel = message["channel"]
                if kind == "smessage":
                    if channel in self.channels:
                        await self._on_message(self.channels[channel], message["data"])
                elif kind == "ssubscribe":
                    confirmed = self._confirmations.pop(channel, None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
                elif kind == "sunsubscribe":
                    pending = self._unsubscribing.get(channel, 0)
                    if pending:  # the reply to unsubscribe()
                        if pending == 1:
                            del self._unsubscribing[channel]
                        else:
                            self._unsubscribing[channel] = pending - 1
                    elif channel in self.channels:  # Redis ended it
                        key = self.channels.pop(channel)
                        self._on_lost(self, [key], "the slot moved")
        except asyncio.CancelledError:
            raise
        except ResponseError as exc:
            # The answer to a subscription (MOVED: the slot is elsewhere):
            # that one failed, the connection and its other channels did not.
            self._refuse_oldest(exc)
            if self._task is asyncio.current_task():
                self._task = asyncio.create_task(self._read())
        except Exception as exc:
            self.dead = True
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_exception(_Lost(str(exc) or type(exc).__name__))
            self._confirmations.clear()
            lost = list(self.channels.values())
            self.channels.clear()
            self._on_lost(self, lost, str(exc) or type(exc).__name__)

    def _refuse_oldest(self, exc: Exception) -> None:
        for channel, confirmed in list(self._confirmations.items()):
            del self._confirmations[channel]
            self.channels.pop(channel, None)
            if not confirmed.done():
                confirmed.set_exception(_Lost(f"subscribing refused: {exc}"))
            return

    async def close(self) -> None:
        self.dead = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.pubsub.aclose()
                await self.client.aclose()
        except Exception:  # closing a dead connection may fail, or hang
            pass


class ShardedSubscriber:
    """Subscribe to the partitions of ``channel`` that ``interest`` wants."""

    def __init__(
        self,
        target: RedisTarget,
        channel: str,
        interest: Interest,
        catchup: Catchup,
        *,
        on_message: Callable[[bytes, int], None],
        on_backfill: Callable[[Hashable, list], None],
        on_release: Callable[[Hashable], None],
        on_gap: Callable[[Hashable, str], None],
        on_control: Callable[[bytes], Awaitable[None] | None],
        on_subscribed: Callable[[], Awaitable[None] | None] | None,
        history_limit: int,
        counters: Counters,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.channel = channel
        self.control_channel = f"{channel}:control"
        self.interest = interest
        self.catchup = catchup
        self.on_message = on_message
        self.on_backfill = on_backfill
        self.on_release = on_release
        self.on_gap = on_gap
        self.on_control = on_control
        self.on_subscribed = on_subscribed
        self.history_limit = history_limit
        self.counters = counters
        self.client_options = client_options or {}
        self._cluster: RedisCluster | None = None
        self._nodes: dict[str, _Node] = {}
        # Subscribed and caught up: partition (or CONTROL) -> node name.
        self._up: dict[Key, str] = {}
        self._ready: dict[Key, asyncio.Event] = {}
        self._histories: dict[Partition, History] = {}
        self._wake = asyncio.Event()
        self._refresh = False
        self._needs_full = True
        self._refreshing: asyncio.Task[None] | None = None
        self._control_was_up = False
        # Partitions being attached (by a task of their own), their backoff
        # after a failure, and when each became wanted.
        self._attaching: dict[Key, str] = {}
        self._attach_slots = asyncio.Semaphore(ATTACHING)
        self._backoff: dict[Key, float] = {}
        self._retry_at: dict[Key, float] = {}
        self._wanted_since: dict[Key, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._delays = backoff_delays()
        # Incremented when the slot map is read again: owners are checked then.
        self._map_version = 0
        self._checked_version = -1
        # The recheck of everyone after partitions came back, and when it began.
        self._loss_recheck: asyncio.Future[None] | None = None
        self._loss_recheck_at = 0.0
        # Control messages by id: being applied, and applied (the latest).
        self._pending_controls: dict[bytes, asyncio.Future[None]] = {}
        self._done_controls: dict[bytes, None] = {}
        interest.on_change = self._wake.set

    # What the server asks

    @property
    def subscribed(self) -> bool:
        """Whether every wanted partition, and the control channel, is up."""
        up = self._up
        return CONTROL in up and all(p in up for p in self.interest.wanted)

    async def wait_for(self, partitions: frozenset[Partition]) -> None:
        """Return once these partitions are subscribed and caught up (the
        caller pins them in the interest first)."""
        for partition in partitions:
            if partition not in self._up:
                await self._event(partition).wait()

    def subscribed_partitions(self) -> frozenset[Partition]:
        return frozenset(key for key in self._up if key is not CONTROL)

    # The loop

    async def run(self) -> None:
        """Reconcile subscriptions until cancelled.

        Each missing partition is attached by a task of its own (at most
        ATTACHING at once), so that a node that does not answer holds up
        only its own partitions; a failed one is tried again after a backoff
        of its own, and the slot map is read again meanwhile.
        """
        try:
            last_full = 0.0
            while True:
                self._wake.clear()
                now = time.monotonic()
                full = self._needs_full or now - last_full >= RECONCILE_INTERVAL
                try:
                    if full:
                        self._needs_full = False
                        await self._reconcile()
                        last_full = now
                    else:
                        await self._reconcile_changes()
                except Exception as exc:  # the cluster not reached yet
                    self._refresh = self._needs_full = True
                    self._log_failure(exc)
                    await asyncio.sleep(next(self._delays))
                    continue
                try:
                    async with asyncio.timeout(RECONCILE_INTERVAL):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                # Changes that come together (a reconnection storm) are taken
                # together.
                await asyncio.sleep(0.01)
        finally:
            await self.close()

    def _log_failure(self, exc: BaseException) -> None:
        self._failures += 1
        log = logger.warning if self._failures == 1 else logger.info
        log("%s: %s", self.target.describe(), str(exc) or type(exc).__name__)

    async def _client(self) -> RedisCluster:
        if self._cluster is None:
            cluster = self.target.async_client(
                socket_timeout=5, socket_connect_timeout=5, **self.client_options
            )
            await cluster.initialize()
            self._cluster = cluster
        elif self._refresh and self._refreshing is None:
            self._refresh = False
            self._refreshing = asyncio.create_task(self._read_slot_map())
        return self._cluster

    async def _read_slot_map(self) -> None:
        """Read the slot map again (a task: a node that does not answer holds
        up no attachment to the others)."""
        try:
            assert self._cluster is not None
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            self._log_failure(exc)
            await asyncio.sleep(next(self._delays))
            self._refresh = True
        else:
            self._delays = backoff_delays()
            self._map_version += 1
        finally:
            self._refreshing = None
            self._wake.set()

    async def _reconcile_changes(self) -> None:
        """Attach the partitions newly wanted; a full pass drops the others."""
        cluster = await self._client()
        added, removed = self.interest.take_changes()
        if removed:
            self._needs_full = True
            self._wake.set()
        now = time.monotonic()
        for key in added:
            self._wanted_since.setdefault(key, time.time())
            if (
                key not in self._up
                and key not in self._attaching
                and self._retry_at.get(key, 0.0) <= now
            ):
                self._attaching[key] = ""
                self._spawn(
                    self._attach_task(cluster, key, channel_of(self.channel, key))
                )

    async def _reconcile(self) -> None:
        cluster = await self._client()
        self.interest.take_changes()
        wanted: dict[Key, str] = {CONTROL: self.control_channel}
        for partition in self.interest.wanted:
            wanted[partition] = channel_of(self.channel, partition)
        now = time.monotonic()
        for key in wanted:
            self._wanted_since.setdefault(key, time.time())
        # Partitions no longer wanted, or whose slot has a new owner (checked
        # when the slot map was read again).
        check_owners = self._map_version != self._checked_version
        self._checked_version = self._map_version
        for key, name in list(self._up.items()):
            node = self._nodes.get(name)
            if key in wanted and node is not None and not node.dead:
                if not check_owners:
                    continue
                try:
                    owner = cluster.get_node_from_key(wanted[key])
                except Exception:  # slot not covered: subscribe again later
                    owner = None
                if owner is not None and owner.name == name:
                    continue
            del self._up[key]
            self._clear(key)
        # Subscriptions no connection needs (up, or half attached): dropped,
        # without waiting (a node that does not answer holds no other).
        for node in self._nodes.values():
            for channel, key in list(node.channels.items()):
                if key not in wanted and key not in self._attaching:
                    self._spawn(self._unsubscribe(node, channel.decode()))
        # Forget what no connection needs any more.
        for key in {
            *self.catchup.streams(),
            *self._ready,
            *self._histories,
            *self._wanted_since,
            *self._retry_at,
            *self._backoff,
        }:
            if key not in wanted and key not in self._up and key not in self._attaching:
                self.catchup.forget(key)
                self._histories.pop(key, None)
                self._wanted_since.pop(key, None)
                self._retry_at.pop(key, None)
                self._backoff.pop(key, None)
                event = self._ready.get(key)
                if event is not None and not event.is_set():
                    del self._ready[key]
        for name, node in list(self._nodes.items()):
            if node.dead or not node.channels:
                if node.dead:
                    for key, up_on in list(self._up.items()):
                        if up_on == name:
                            del self._up[key]
                            self._clear(key)
                if not any(task_node == name for task_node in self._attaching.values()):
                    del self._nodes[name]
                    self._spawn(node.close())
        for key, channel in wanted.items():
            if (
                key not in self._up
                and key not in self._attaching
                and self._retry_at.get(key, 0.0) <= now
            ):
                self._attaching[key] = ""
                self._spawn(self._attach_task(cluster, key, channel))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unsubscribe(self, node: _Node, channel: str) -> None:
        try:
            await node.unsubscribe(channel)
        except Exception:
            node.dead = True  # closed and replaced when needed
            self._wake.set()

    async def _attach_task(self, cluster: RedisCluster, key: Key, channel: str) -> None:
        try:
            async with self._attach_slots:
                await self._attach(cluster, key, channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._refresh = True
            delay = self._backoff.get(key, 0.1)
            self._backoff[key] = min(delay * 2, 5.0)
            self._retry_at[key] = time.monotonic() + delay * (0.5 + random.random() / 2)
            self._log_failure(exc)
            self._needs_full = True
        else:
            self._backoff.pop(key, None)
            self._retry_at.pop(key, None)
            if self._failures:
                logger.warning("Redis Cluster subscriptions are back")
                self._failures = 0
        finally:
            self._attaching.pop(key, None)

    async def _attach(self, cluster: RedisCluster, key: Key, channel: str) -> None:
        owner = cluster.get_node_from_key(channel)
        self._attaching[key] = owner.name
        node = self._nodes.get(owner.name)
        if node is not None and node.dead:
            self._spawn(node.close())
            node = None
        if node is None:
            node = self._nodes[owner.name] = _Node(
                owner.name,
                Redis(
                    connection_pool=ConnectionPool(
                        host=owner.host,
                        port=owner.port,
                        # A reconnection must not go unnoticed: it is a loss.
                        retry=Retry(NoBackoff(), 0),
                        health_check_interval=HEALTH_CHECK_INTERVAL,
                        socket_connect_timeout=5,
                        socket_keepalive=True,
                        **_connection_options(cluster),
                    )
                ),
                self._received,
                self._lost,
            )
        if key == CONTROL:
            await node.subscribe(channel, key)
            self._set_up(key, owner.name)
            if self._control_was_up and self.on_subscribed is not None:
                # What went by meanwhile may have revoked access.
                result = self.on_subscribed()
                if result is not None:
                    await result
            self._control_was_up = True
            return
        history = self.history(key)
        # Followed before: its subscription was lost, and with it the
        # control messages meanwhile. Access is read again (once for all the
        # partitions lost together) before anything missed is sent.
        lost = self.catchup.position(key) is not None
        # Followed from when it was wanted (a connection's access changed:
        # what the user may see since then is sent), less GRANT_MARGIN for
        # the time the change took to reach here, or from the stream's newest
        # entry if later. Read before subscribing, so that what is published
        # in between is read from the stream.
        since = self._wanted_since.get(key, time.time()) - GRANT_MARGIN
        await backfill.start(
            history, self.catchup, key, since=(max(int(since * 1000), 0), 0)
        )
        self.catchup.hold(key)
        await node.subscribe(channel, key)
        subscribed_at = time.monotonic()
        if lost:
            await self._recheck_after(subscribed_at)
        await backfill.catch_up(
            history,
            self.catchup,
            key,
            send=self.on_backfill,
            on_gap=self.on_gap,
            counters=self.counters,
            before_send=self._controls_applied,
        )
        self.on_release(key)
        if node.dead or channel.encode() not in node.channels:
            # Lost while the stream was read: held events stay held, and the
            # next attempt reads from the position reached.
            self.catchup.hold(key)
            raise _Lost(f"the subscription to {owner.name} ended while catching up")
        self._set_up(key, owner.name)

    async def _recheck_after(self, subscribed_at: float) -> None:
        """Read everyone's access again, in a recheck started after
        ``subscribed_at`` (one for every partition that came back with it)."""
        if self.on_subscribed is None:
            return
        task = self._loss_recheck
        if task is None or self._loss_recheck_at < subscribed_at:
            self._loss_recheck_at = time.monotonic()
            task = self._loss_recheck = asyncio.ensure_future(self._call_recheck())
        await asyncio.shield(task)

    async def _call_recheck(self) -> None:
        assert self.on_subscribed is not None
        result = self.on_subscribed()
        if result is not None:
            await result

    async def _controls_applied(self) -> None:
        """Wait for the access changes under way (see _control)."""
        if self._pending_controls:
            await asyncio.gather(
                *(asyncio.shield(task) for task in self._pending_controls.values()),
                return_exceptions=True,
            )

    def _channel(self, key: Key) -> str:
        if key is CONTROL:
            return self.control_channel
        return channel_of(self.channel, key)

    def history(self, partition: Partition) -> History:
        """A partition's history stream (once the cluster was reached)."""
        history = self._histories.get(partition)
        if history is None:
            if self._cluster is None:
                raise HistoryUnavailable("the Redis Cluster was not reached yet")
            history = self._histories[partition] = History(
                self.target.describe(),
                history_key_of(self.channel, partition),
                self.history_limit,
                client=self._cluster,
                id_prefix=f"{partition}:",
            )
        return history

    def resume_history(self) -> ClusterHistory:
        """What resumes read: the partitions' streams."""
        return ClusterHistory(self.history, self.interest.partitions)

    async def _received(self, key: Key, data: bytes) -> None:
        try:
            if data[:1] == CONTROL_MARK:
                await self._control(data)
            elif key is CONTROL:
                await self._control(b"!\n" + data)  # from an older publisher
            else:
                self.on_message(data, key)  # type: ignore[arg-type]
        except Exception:
            self.counters.bus_events["invalid"] += 1
            logger.exception("Skipped a message on %r: %.100r", key, data)

    async def _control(self, data: bytes) -> None:
        """A control message, ``!<id>\n<message>``: its copies come on every
        partition it concerns; the first starts the recheck, and each holds
        its node's events (those published after it there) until the
        recheck is done."""
        header, _, message = data.partition(b"\n")
        control_id = header[1:]
        task = self._pending_controls.get(control_id) if control_id else None
        if task is None:
            if control_id and control_id in self._done_controls:
                return
            task = asyncio.ensure_future(self._apply_control(control_id, message))
            if control_id:
                self._pending_controls[control_id] = task
        await asyncio.shield(task)

    async def _apply_control(self, control_id: bytes, message: bytes) -> None:
        try:
            result = self.on_control(message)
            if result is not None:
                await result
        finally:
            if control_id:
                self._pending_controls.pop(control_id, None)
                self._done_controls[control_id] = None
                if len(self._done_controls) > 10_000:
                    del self._done_controls[next(iter(self._done_controls))]

    def _lost(self, node: _Node, keys: list[Key], why: str) -> None:
        lost = [key for key in keys if self._up.get(key) == node.name]
        for key in lost:
            del self._up[key]
            self._clear(key)
        if lost:
            self.counters.bus_reconnects += 1
            logger.warning(
                "Redis Cluster node %s: %d subscription(s) lost (%s); "
                "subscribing again and reading what was missed",
                node.name,
                len(lost),
                why,
            )
        self._refresh = self._needs_full = True
        self._wake.set()

    def _event(self, key: Key) -> asyncio.Event:
        event = self._ready.get(key)
        if event is None:
            event = self._ready[key] = asyncio.Event()
            if key in self._up:
                event.set()
        return event

    def _set_up(self, key: Key, name: str) -> None:
        self._up[key] = name
        event = self._ready.get(key)
        if event is not None:
            event.set()

    def _clear(self, key: Key) -> None:
        event = self._ready.get(key)
        if event is not None:
            event.clear()

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._refreshing] if self._refreshing else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._attaching.clear()
        self._histories.clear()
        self._up.clear()
        nodes, self._nodes = list(self._nodes.values()), {}
        # At once: each close is bounded, and a dead node holds no other.
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await cluster.aclose()
            except Exception:
                pass


def _connection_options(cluster: RedisCluster) -> dict[str, Any]:
    """What a node's own connection needs of the cluster's: credentials, TLS."""
    options = dict(cluster.get_connection_kwargs())
    return {
        key: value
        for key, value in options.items()
        if key in {"username", "password", "connection_class"} or key.startswith("ssl")
    }
