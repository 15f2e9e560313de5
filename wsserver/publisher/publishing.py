"""Send events to Redis once the transaction that made them has committed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import redis
from django.contrib.admin.models import LogEntry
from django.db import transaction

from . import conf
from .events import event_for, serialize

logger = logging.getLogger("wsserver.publisher")

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def client() -> redis.Redis:
    """One Redis client per process; redis-py's pool is thread-safe."""
    global _client
    with _client_lock:
        if _client is None:
            timeout = conf.publish_timeout()
            _client = redis.Redis.from_url(
                conf.redis_url(),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        return _client


def reset_client() -> None:
    """Forget the client, e.g. after the settings changed (tests)."""
    global _client
    with _client_lock:
        _client = None


def publish_on_commit(entries: Iterable[LogEntry], using: str | None = None) -> None:
    """Publish these entries when (and only if) the current transaction commits.

    The payloads are built now, while the entries' related rows are readable,
    and sent after the commit; outside a transaction they are sent at once.
    """
    payloads = [serialize(event) for entry in entries if (event := event_for(entry))]
    if payloads:
        transaction.on_commit(lambda: publish(payloads), using=using)


def publish(payloads: list[str]) -> bool:
    """Send payloads to the channel; a Redis failure is logged, never raised.

    The change is already committed: failing the admin's request would not undo
    it, so the event is lost and the log says so.
    """
    channel = conf.channel()
    try:
        with client().pipeline(transaction=False) as pipeline:
            for payload in payloads:
                pipeline.publish(channel, payload)
            pipeline.execute()
    except redis.RedisError as exc:
        logger.error(
            "could not publish %d event(s) to Redis at %s, channel %r: %s",
            len(payloads),
            conf.redis_url(),
            channel,
            exc,
        )
        return False
    return True
