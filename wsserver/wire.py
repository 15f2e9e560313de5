"""What the publisher and the sidecar agree on in Redis.

Django-free, so that the sidecar, the publisher app and tests share it.
"""

from __future__ import annotations

__all__ = [
    "PUBLISH_WITH_HISTORY",
    "acl_setuser",
    "addressed",
    "control_channel",
    "glob_escape",
    "history_key",
    "publisher_acl",
    "sidecar_acl",
]


def control_channel(channel: str) -> str:
    """Where the publisher says whose access changed (see wsserver.control)."""
    return f"{channel}:control"


def history_key(channel: str) -> str:
    """The Redis Stream holding the channel's recent events."""
    return f"{channel}:history"


# Append an event to the history stream and publish it, atomically, with the
# stream entry's id inserted as the event's first field. KEYS[1]: the stream.
# ARGV: the event (a compact JSON object, as clients receive it), the stream's
# approximate maximum length, the channel, the event's content type id or ""
# (an admin event: routed by it, kept in the entry as field "ct" so that a
# resume filters entries without parsing them), and the event's audience or ""
# (its JSON, see wsserver.audience: kept as field "aud", and published before
# the event as "@<audience>\n<event>"). An event with an audience is kept as
# field "aevent", not "event": a sidecar older than audiences, which would
# replay it to the content type's viewers, finds no event and skips it.
# On a Redis Cluster (see wsserver.partitions), ARGV[6] is put before the id
# ("<partition>:") and ARGV[7] is "sharded": the channel is a sharded one,
# in the stream's slot.
PUBLISH_WITH_HISTORY = """
local audience = ARGV[5] or ''
local prefix = ARGV[6] or ''
local fields
if audience ~= '' then
  fields = {'aevent', ARGV[1], 'aud', audience}
else
  fields = {'event', ARGV[1]}
end
if ARGV[4] and ARGV[4] ~= '' then
  fields[#fields + 1] = 'ct'
  fields[#fields + 1] = ARGV[4]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
local message = '{"id":"' .. prefix .. id .. '",' .. string.sub(ARGV[1], 2)
if audience ~= '' then
  message = '@' .. audience .. '\\n' .. message
end
if ARGV[7] == 'sharded' then
  redis.call('SPUBLISH', ARGV[3], message)
else
  redis.call('PUBLISH', ARGV[3], message)
end
return id
"""


def addressed(audience: str, event: str) -> str:
    """A bus message for an event with an audience, published without history
    (so without an id): ``@<audience>\\n<event>``."""
    return f"@{audience}\n{event}"


# Redis ACL users with the least rights, one for each side. The commands are
# exactly those redis-py sends for this code: see docs/redis.md.


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches only itself.

    ACL key (``~``) and channel (``&``) rules are glob patterns: a channel
    named ``events*`` must not grant ``events-of-another-site``.
    """
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _connection_rules(db: int, client_setinfo: bool) -> list[str]:
    # On connecting, redis-py 8 sends HELLO 3 with AUTH (allowed to anyone),
    # CLIENT MAINT_NOTIFICATIONS and CLIENT SETINFO, whose refusal it ignores,
    # and SELECT unless the URL's database is 0. Refused, CLIENT SETINFO is
    # logged in ACL LOG on each connection (Redis 7.2+); Redis 7.0 has no such
    # command and refuses the rule.
    rules = []
    if db:
        rules.append("+select")
    if client_setinfo:
        rules.append("+client|setinfo")
    return rules


def publisher_acl(channel: str, db: int, *, client_setinfo: bool = True) -> list[str]:
    """The main site's rules: append to and publish on ``channel``, nothing else.

    redis-py runs PUBLISH_WITH_HISTORY as a Script in a pipeline: SCRIPT
    EXISTS, SCRIPT LOAD when the script is not cached, then EVALSHA. Redis
    checks the commands, keys and channels of a script against the user who
    runs it, so XADD and PUBLISH are needed too. EVALSHA's declared key needs
    read and write rights (``~``, not ``%W~``), yet no command can read it.
    """
    return [
        "resetkeys",
        f"~{glob_escape(history_key(channel))}",
        "resetchannels",
        f"&{glob_escape(channel)}",
        f"&{glob_escape(control_channel(channel))}",
        "-@all",
        "+evalsha",
        "+script|exists",
        "+script|load",
        "+xadd",
        "+publish",
        *_connection_rules(db, client_setinfo),
    ]


def sidecar_acl(channel: str, db: int, *, client_setinfo: bool = True) -> list[str]:
    """The sidecar's rules: subscribe to ``channel`` and read its history.

    SUBSCRIBE to both channels on one connection, PING (the pubsub health
    check, and ``wsserver check``), and the stream's read commands. It can
    neither publish nor write, and its key rule is read-only (``%R~``).
    """
    return [
        "resetkeys",
        f"%R~{glob_escape(history_key(channel))}",
        "resetchannels",
        f"&{glob_escape(channel)}",
        f"&{glob_escape(control_channel(channel))}",
        "-@all",
        "+subscribe",
        "+ping",
        "+xinfo|stream",
        "+xrange",
        "+xrevrange",
        *_connection_rules(db, client_setinfo),
    ]


def acl_setuser(user: str, password: str, rules: list[str]) -> list[str]:
    """The ACL SETUSER command that creates ``user``, or replaces all its rights.

    ``reset`` first: on an existing user, ACL SETUSER adds to what it had.
    """
    return ["ACL", "SETUSER", user, "reset", "on", f">{password}", *rules]
