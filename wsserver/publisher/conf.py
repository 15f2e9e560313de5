"""The publisher's settings, read from the main site's settings with defaults."""

from __future__ import annotations

from django.conf import settings


def redis_url() -> str:
    """WSSERVER_REDIS_URL: the Redis to publish to."""
    return getattr(settings, "WSSERVER_REDIS_URL", "redis://127.0.0.1:6379/1")


def redis_cluster() -> bool:
    """WSSERVER_REDIS_CLUSTER: WSSERVER_REDIS_URL names a Redis Cluster node."""
    return bool(getattr(settings, "WSSERVER_REDIS_CLUSTER", False))


def redis_ca_file() -> str | None:
    """WSSERVER_REDIS_CA_FILE: the CA certificates that rediss:// trusts."""
    return getattr(settings, "WSSERVER_REDIS_CA_FILE", None) or None


def channel() -> str:
    """WSSERVER_CHANNEL: the channel events are published on."""
    return getattr(settings, "WSSERVER_CHANNEL", "events")


def sesame_scope() -> str:
    """WSSERVER_SESAME_SCOPE: the scope of the tokens made for the sidecar."""
    return getattr(settings, "WSSERVER_SESAME_SCOPE", "wsserver")


def publish_timeout() -> float:
    """WSSERVER_PUBLISH_TIMEOUT: seconds to wait for Redis before giving up."""
    return float(getattr(settings, "WSSERVER_PUBLISH_TIMEOUT", 2))


def history_size() -> int:
    """Events kept in the Redis Stream for resuming clients; 0: none."""
    return int(getattr(settings, "WSSERVER_HISTORY_SIZE", 10_000))


def max_event_size() -> int:
    """WSSERVER_MAX_EVENT_SIZE: the largest event (its JSON as clients receive
    it, without the id, in UTF-8 bytes) that is published."""
    return int(getattr(settings, "WSSERVER_MAX_EVENT_SIZE", 65_536))


def admin() -> bool:
    """WSSERVER_ADMIN: live warnings, counts and notices in the Django admin."""
    return bool(getattr(settings, "WSSERVER_ADMIN", False))


def url() -> str | None:
    """WSSERVER_URL: the sidecar's address as browsers reach it (ws:// or wss://)."""
    return getattr(settings, "WSSERVER_URL", None)
