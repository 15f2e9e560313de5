"""What the publisher and the sidecar agree on in Redis.

Django-free, so that the sidecar, the publisher app and tests share it.
"""

from __future__ import annotations

__all__ = ["PUBLISH_WITH_HISTORY", "control_channel", "history_key"]


def control_channel(channel: str) -> str:
    """Where the publisher says whose access changed (see wsserver.control)."""
    return f"{channel}:control"


def history_key(channel: str) -> str:
    """The Redis Stream holding the channel's recent events."""
    return f"{channel}:history"


# Append an event to the history stream and publish it, atomically, with the
# stream entry's id inserted as the event's first field. KEYS[1]: the stream.
# ARGV: the event (a JSON object), the stream's approximate maximum length,
# the channel.
PUBLISH_WITH_HISTORY = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
redis.call('PUBLISH', ARGV[3], '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
"""
