"""End to end: events addressed to users, groups, permissions and models.

The example site on PostgreSQL shares its database with a sidecar process;
events come from the site's own ``publish()`` (through ``manage.py
wsserver_publish`` and ``manage.py shell``) or, for malformed ones, straight
from the bus. Each test ends with a sentinel event for everyone, so that
what each client received before it is exactly what it was sent.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from clients import assert_no_event, publish_like_the_publisher, receive_event
from processes import SidecarProcess
from waiting import eventually

from wsserver.audience import encode_audience

pytestmark = pytest.mark.e2e

# The demo users (see seed_demo): admin is a superuser; alice has
# catalog.view_article; bob has nothing; dave is in "product-editors", which
# has catalog.change_product.
USERS = ["admin", "alice", "bob", "dave"]


@pytest.fixture(scope="module")
def site(postgres_site):
    return postgres_site


@pytest.fixture(scope="module")
def ids(site) -> dict:
    """The demo users' pks and the group's pk."""
    script = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.models import Group\n"
        "users = {u.username: str(u.pk) for u in get_user_model().objects.all()}\n"
        "group = Group.objects.get(name='product-editors').pk\n"
        "print(json.dumps({'users': users, 'group': group}))\n"
    )
    return json.loads(site.manage("shell", "-c", script).splitlines()[-1])


@pytest.fixture(scope="module")
def sidecar(site, tmp_path_factory):
    process = SidecarProcess.for_site(site, tmp_path_factory.mktemp("sidecar"))
    yield process.start()
    assert process.stop() == 0


@pytest.fixture
async def clients(site, sidecar):
    """One connection per demo user, and a second one for alice."""
    # Tokens first: each is a manage.py run that blocks this event loop, and
    # open connections would go unanswered meanwhile (keepalive pings).
    tokens = {user: site.token(user) for user in USERS}
    second = site.token("alice")
    connected = {user: await sidecar.connect(tokens[user]) for user in USERS}
    connected["alice2"] = await sidecar.connect(second)
    yield connected
    for websocket in connected.values():
        await websocket.close()


def shell(site, code: str) -> str:
    """Run Python in the main site (``manage.py shell -c``)."""
    return site.manage("shell", "-c", "from wsserver.publisher import publish\n" + code)


async def received_until_sentinel(websocket) -> list[str]:
    """The names of the app events received before the sentinel."""
    names = []
    while (message := await receive_event(websocket))["event"] != "sentinel":
        names.append(message["event"])
    return names


def everyone(ids) -> str:
    return repr(sorted(ids["users"].values()))


async def test_each_audience_reaches_exactly_its_users(site, ids, clients):
    group = ids["group"]
    shell(
        site,
        f"publish('to.alice', {{'n': 1}}, users=[{ids['users']['alice']!r}])\n"
        "from django.contrib.auth import get_user_model\n"
        "bob = get_user_model().objects.get(username='bob')\n"
        "publish('to.bob', None, users=[bob])\n"
        "publish('to.group.by.name', None, groups=['product-editors'])\n"
        f"publish('to.group.by.pk', None, groups=[{group}])\n"
        "publish('to.view_article', None, permissions=['catalog.view_article'])\n"
        "publish('to.change_product', None, permissions=['catalog.change_product'])\n"
        "publish('to.nobody.but.root', None, permissions=['catalog.delete_article'])\n"
        "publish('to.article.model', None, models=['catalog.article'])\n"
        "from catalog.models import Product\n"
        "publish('to.product.model', None, models=[Product])\n"
        "publish('union', None, users=[bob], groups=['product-editors'],"
        " permissions=['catalog.change_product'])\n"
        f"publish('sentinel', None, users={everyone(ids)})\n",
    )
    expected = {
        "admin": [
            "to.view_article",
            "to.change_product",
            "to.nobody.but.root",
            "to.article.model",
            "to.product.model",
            "union",
        ],
        "alice": ["to.alice", "to.view_article", "to.article.model"],
        "bob": ["to.bob", "union"],
        "dave": [
            "to.group.by.name",
            "to.group.by.pk",
            "to.change_product",
            "to.product.model",
            "union",
        ],
    }
    expected["alice2"] = expected["alice"]
    for name, websocket in clients.items():
        assert await received_until_sentinel(websocket) == expected[name], name


async def test_the_app_event_shape_and_its_id(site, ids, clients):
    shell(
        site,
        f"publish('export.ready', {{'url': '/exports/42.csv', 'é': [1, None]}},"
        f" users=[{ids['users']['bob']!r}])\n",
    )
    message = await receive_event(clients["bob"])
    assert list(message) == ["id", "event", "data"]
    assert message["event"] == "export.ready"
    assert message["data"] == {"url": "/exports/42.csv", "é": [1, None]}


async def test_a_rolled_back_transaction_publishes_nothing(site, ids, clients):
    alice = ids["users"]["alice"]
    shell(
        site,
        "from django.db import transaction\n"
        "try:\n"
        "    with transaction.atomic():\n"
        f"        publish('rolled.back', None, users=[{alice!r}])\n"
        "        raise RuntimeError\n"
        "except RuntimeError:\n"
        "    pass\n"
        "with transaction.atomic():\n"
        f"    publish('committed', None, users=[{alice!r}])\n"
        f"publish('sentinel', None, users={everyone(ids)})\n",
    )
    assert await received_until_sentinel(clients["alice"]) == ["committed"]


async def test_group_membership_changes_apply_to_the_next_event(site, ids, clients):
    # The control message that the membership change sends is handled (bob's
    # and dave's principals reloaded) before the next event is routed.
    shell(
        site,
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.models import Group\n"
        "User = get_user_model()\n"
        "group = Group.objects.get(name='product-editors')\n"
        "try:\n"
        "    group.user_set.add(User.objects.get(username='bob'))\n"
        "    group.user_set.remove(User.objects.get(username='dave'))\n"
        "    publish('group.news', None, groups=[group])\n"
        "    publish('change_product.news', None,"
        " permissions=['catalog.change_product'])\n"
        f"    publish('sentinel', None, users={everyone(ids)})\n"
        "finally:\n"
        "    group.user_set.remove(User.objects.get(username='bob'))\n"
        "    group.user_set.add(User.objects.get(username='dave'))\n",
    )
    assert await received_until_sentinel(clients["bob"]) == [
        "group.news",
        "change_product.news",
    ]
    assert await received_until_sentinel(clients["dave"]) == []
    assert await received_until_sentinel(clients["admin"]) == ["change_product.news"]


async def test_resume_replays_app_events_only_to_their_audience(
    site, ids, sidecar, clients
):
    users = ids["users"]
    shell(site, f"publish('before', None, users=[{users['alice']!r}])\n")
    last_seen = (await receive_event(clients["alice"]))["id"]
    await clients["alice"].close()
    shell(
        site,
        f"publish('missed.alice', None, users=[{users['alice']!r}])\n"
        f"publish('missed.bob', None, users=[{users['bob']!r}])\n"
        "publish('missed.group', None, groups=['product-editors'])\n"
        "publish('missed.view_article', None,"
        " permissions=['catalog.view_article'])\n"
        f"publish('sentinel', None, users={everyone(ids)})\n",
    )
    hello = json.dumps({"token": site.token("alice"), "last_event_id": last_seen})
    resumed = await sidecar.connect(hello)
    try:
        assert await received_until_sentinel(resumed) == [
            "missed.alice",
            "missed.view_article",
        ]
    finally:
        await resumed.close()


async def test_malformed_audiences_on_the_bus_are_skipped(site, ids, sidecar, clients):
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    channel = site.env["WSSERVER_CHANNEL"]
    invalid_before = sidecar.invalid_bus_messages()
    malformed = [
        b'@{"everyone":true}\n{"event":"x"}',
        b'@{"users":[%s]}\n{"event":"x"}' % ids["users"]["bob"].encode(),
        b'@{"users":["1"]}\n',
        b'@{"users":["1"]}',
        b"@" + b"[" * 10_000 + b"\n{}",
    ]
    for message in malformed:
        bus.publish(channel, message)
    # Published with the publisher's script: skipped live (counted), and its
    # history entry would be skipped by a resume.
    publish_like_the_publisher(
        bus, channel, {"event": "bad.history"}, audience='{"groups":["x"]}'
    )
    sentinel = encode_audience(users=ids["users"].values())
    publish_like_the_publisher(bus, channel, {"event": "sentinel"}, audience=sentinel)
    for name, websocket in clients.items():
        assert await received_until_sentinel(websocket) == [], name
    await eventually(
        lambda: sidecar.invalid_bus_messages() == invalid_before + len(malformed) + 1,
        5,
        "the malformed messages counted",
    )
    assert "Skipped" in sidecar.log()
    bus.close()


async def test_events_larger_than_the_limit_are_skipped(site, ids, sidecar, clients):
    bob = ids["users"]["bob"]
    big = "x" * 70_000  # WS_MAX_EVENT_SIZE is 65536 by default
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    channel = site.env["WSSERVER_CHANNEL"]
    audience = encode_audience(users=[bob])
    publish_like_the_publisher(
        bus, channel, {"event": "too.big", "data": big}, audience=audience
    )
    publish_like_the_publisher(
        bus, channel, {"event": "sentinel", "data": big[:60_000]}, audience=audience
    )
    assert await received_until_sentinel(clients["bob"]) == []
    await assert_no_event(clients["alice"], 0.1)
    bus.close()
    assert "WS_MAX_EVENT_SIZE" in sidecar.log()


async def test_a_personal_event_among_many_connections(site, ids, sidecar, clients):
    # bob's second connection and 50 other users' connections: bob's event
    # goes to bob's connections only.
    token = site.token("alice")  # one manage.py run, not 20 blocking the loop
    others = await asyncio.gather(*(sidecar.connect(token) for _ in range(20)))
    try:
        bob = ids["users"]["bob"]
        shell(site, f"publish('only.bob', 1, users=[{bob!r}])\n")
        assert (await receive_event(clients["bob"]))["event"] == "only.bob"
        for websocket in [*others, clients["alice"], clients["admin"]]:
            await assert_no_event(websocket, 0.05)
    finally:
        for websocket in others:
            await websocket.close()
