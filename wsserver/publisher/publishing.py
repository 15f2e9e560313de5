"""Send events and control messages to Redis once their transaction commits.

Each event is appended to a bounded Redis Stream and published on the
channel by one Lua script, atomically: the stream entry's id becomes the
event's ``"id"``, and the order of the stream is the order of publication,
which is what lets the sidecar replay history with no gap and no duplicate.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable

import redis
from django.contrib.admin.models import LogEntry
from django.db import transaction

from ..logs import mask_url
from ..wire import PUBLISH_WITH_HISTORY, control_channel, history_key
from . import conf
from .events import event_for, serialize

logger = logging.getLogger("wsserver.publisher")

_client: redis.Redis | None = None
_script = None
_client_lock = threading.Lock()


def client() -> redis.Redis:
    """One Redis client per process; redis-py's pool is thread-safe."""
    global _client, _script
    with _client_lock:
        if _client is None:
            timeout = conf.publish_timeout()
            _client = redis.Redis.from_url(
                conf.redis_url(),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            _script = _client.register_script(PUBLISH_WITH_HISTORY)
        return _client


def reset_client() -> None:
    """Forget the client, e.g. after the settings changed (tests)."""
    global _client, _script
    with _client_lock:
        _client = _script = None


def publish_on_commit(entries: Iterable[LogEntry], using: str | None = None) -> None:
    """Publish these entries when (and only if) the current transaction commits.

    The payloads are built now, while the entries' related rows are readable,
    and sent after the commit; outside a transaction they are sent at once.
    """
    events = [event for entry in entries if (event := event_for(entry))]
    if events:
        transaction.on_commit(lambda: publish(events), using=using)


def publish(events: list[dict]) -> bool:
    """Send events to the channel; a Redis failure is logged, never raised.

    The change is already committed: failing the admin's request would not undo
    it, so the event is lost and the log says so.
    """
    channel = conf.channel()
    history_size = conf.history_size()
    try:
        redis_client = client()
        with redis_client.pipeline(transaction=False) as pipeline:
            for event in events:
                payload = serialize(event)
                if history_size > 0:
                    content_type_id = event["content_type_id"]
                    _script(
                        keys=[history_key(channel)],
                        args=[payload, history_size, channel, content_type_id],
                        client=pipeline,
                    )
                else:
                    pipeline.publish(channel, payload)
            pipeline.execute()
    except redis.RedisError as exc:
        _log_failure(f"{len(events)} event(s)", channel, exc)
        return False
    return True


def publish_control_on_commit(message: dict, using: str | None = None) -> None:
    """Tell every sidecar, after the commit, whose access may have changed."""
    payload = json.dumps(message)
    transaction.on_commit(lambda: publish_control(payload), using=using)


def publish_control(payload: str) -> bool:
    """Send a control message now; a Redis failure is logged and returns False."""
    channel = control_channel(conf.channel())
    try:
        client().publish(channel, payload)
    except redis.RedisError as exc:
        _log_failure("an access change", channel, exc)
        return False
    return True


def _log_failure(what: str, channel: str, exc: Exception) -> None:
    logger.error(
        "could not publish %s to Redis at %s, channel %r: %s",
        what,
        mask_url(conf.redis_url()),
        channel,
        exc,
    )
