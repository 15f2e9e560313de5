"""The router against a model of it, and what it is given from the history.

The model: who is in an audience is ``Audience.allows(principal)`` (what
replays use), asked of every live connection; the router answers the same
question with its indexes. Random connections are added, updated (the same
user's principal, reloaded) and removed, and after each step random
audiences are routed both ways. Seeded, so a failure repeats.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
import redis

from wsserver import history
from wsserver.audience import Audience
from wsserver.routing import Permissions, Principal, Router
from wsserver.wire import PUBLISH_WITH_HISTORY

USERS = ["1", "2", "3", "4"]
GROUPS = [1, 2, 3]
CODENAMES = ["a.x", "a.y", "b.z"]
CONTENT_TYPES = [10, 11, 12]
# Roles: principals share these objects, as the Authenticator shares equal sets.
ROLES = [frozenset({"a.x"}), frozenset({"a.x", "b.z"})]


class Conn:
    """Stands for a connection: the router only needs hashable objects."""

    def __init__(self, n: int):
        self.n = n

    def __repr__(self) -> str:
        return f"c{self.n}"


def some(rng: random.Random, items) -> frozenset:
    return frozenset(item for item in items if rng.random() < 0.4)


def principal(rng: random.Random, user_id: str) -> Principal:
    if rng.random() < 0.2:
        permissions = Permissions.all()
    else:
        permissions = Permissions(some(rng, CONTENT_TYPES))
    codenames = rng.choice(ROLES) if rng.random() < 0.3 else some(rng, CODENAMES)
    return Principal(
        user_id,
        f"user{user_id}",
        permissions,
        group_ids=some(rng, GROUPS),
        codenames=codenames,
    )


def audience(rng: random.Random) -> Audience:
    while True:
        candidate = Audience(
            some(rng, USERS),
            some(rng, GROUPS),
            some(rng, CODENAMES),
            some(rng, CONTENT_TYPES),
        )
        if candidate:
            return candidate


def check(router: Router, live: dict, rng: random.Random) -> None:
    """The router agrees with the model on everything it answers."""
    assert len(router) == len(live)
    assert set(router.users()) == {p.user_id for p in live.values()}
    for user_id in USERS:
        expected = {c for c, p in live.items() if p.user_id == user_id}
        assert router.connections_of(user_id) == expected
    for connection, expected in live.items():
        assert router.principal(connection) is expected
    for content_type_id in CONTENT_TYPES:
        expected = {c for c, p in live.items() if p.permissions.allows(content_type_id)}
        found = list(router.recipients_of_content_type(content_type_id))
        assert len(found) == len(set(found)) == router.count_recipients(content_type_id)
        assert set(found) == expected
    for _ in range(5):
        routed = audience(rng)
        found = list(router.recipients(routed))
        assert len(found) == len(set(found)), ("each connection once", routed, found)
        assert set(found) == {c for c, p in live.items() if routed.allows(p)}, routed
        assert router.count_audience(routed) == len(found)


def test_the_router_routes_as_audiences_allow():
    rng = random.Random(1)
    for _ in range(200):
        router: Router = Router()
        live: dict[Conn, Principal] = {}
        for n in range(40):
            step = rng.random()
            if step < 0.5 or not live:
                connection = Conn(n)
                live[connection] = principal(rng, rng.choice(USERS))
                router.add(connection, live[connection])
            elif step < 0.8:
                connection = rng.choice(list(live))
                live[connection] = principal(rng, live[connection].user_id)
                router.update(connection, live[connection])
            else:
                connection = rng.choice(list(live))
                assert router.remove(connection) is live.pop(connection)
            check(router, live, rng)
        for connection in list(live):
            router.remove(connection)
        # Memory follows open connections: no empty bucket is left.
        assert not (
            router._by_user
            or router._by_group
            or router._by_codenames
            or router._codename_sets
            or router._by_content_type
            or router._everything
        )


# What a replay is given: an addressed model change in the history


def older_sidecars_content_type(fields: dict[bytes, bytes]) -> int | None:
    """What a sidecar older than audiences (its history._entry) routed a
    replayed entry by: the content type of its "event" field ("ct", else the
    event's content_type_id), to every viewer of the model; None: skipped."""
    event = fields.get(b"event", b"")
    if not history._sendable(event):
        return None
    content_type = fields.get(b"ct")
    if content_type is not None and content_type.isdigit():
        return int(content_type)
    return json.loads(event).get("content_type_id")


@pytest.mark.e2e
def test_an_addressed_model_change_is_skipped_by_a_sidecar_older_than_audiences(
    redis_url,
):
    """A change of a model listed with an audience callable has a content
    type (its entry's "ct") and an audience ("aud"). A sidecar older than
    audiences read the entry's "event" and routed it by "ct", to every viewer
    of the model; the script keeps the event as "aevent", so that such a
    sidecar finds nothing to send, while this one reads it, to its audience
    only."""
    client = redis.Redis.from_url(redis_url)
    key = f"routing-model-{uuid.uuid4().hex[:12]}"
    event = '{"content_type_id":7,"action":"change","object_id":"3"}'
    audience = '{"users":["1"]}'
    try:
        args = [event, 100, key + ":channel", "7", audience]
        stream_id = client.eval(PUBLISH_WITH_HISTORY, 1, key, *args)
        [(entry_id, fields)] = client.xrange(key)
    finally:
        client.delete(key)
        client.close()
    assert entry_id == stream_id
    assert fields == {b"aevent": event.encode(), b"aud": audience.encode(), b"ct": b"7"}
    assert older_sidecars_content_type(fields) is None
    entry = history._entry(entry_id, fields)
    assert entry.audience == Audience(users=frozenset({"1"}))
    owner = Principal("1", "owner", Permissions())
    viewer = Principal("2", "viewer", Permissions(frozenset({7})))
    assert entry.audience.allows(owner) and not entry.audience.allows(viewer)
    assert entry.payload == (
        b'{"id":"%s","content_type_id":7,"action":"change","object_id":"3"}' % entry_id
    )
