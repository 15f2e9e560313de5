"""Rechecks of access that fail closed, and that catch what no message said.

The example site on a SQLite file (which a test can lock, as a database that
stops answering) and real sidecar processes. Changes are made where the
publisher sees them (the admin's forms, the ORM's save()) or where it cannot
(QuerySet.update(), a Redis outage that loses the control message).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest
import redis
from clients import assert_no_event, closed_with, receive_event
from faults import ThrowawayRedis
from processes import PASSWORD, MainSite, http_status
from waiting import eventually, wait_for
from websockets.exceptions import ConnectionClosed

from wsserver.wire import control_channel

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def demo_users(site):
    """Every test starts from the demo users as seeded."""
    site.manage("seed_demo", "--password", PASSWORD)


def shell(site: MainSite, code: str) -> str:
    return site.manage("shell", "--verbosity", "0", "-c", code).strip()


def content_type_id(site: MainSite, model: str) -> int:
    return int(
        shell(
            site,
            "from django.contrib.contenttypes.models import ContentType; "
            f"print(ContentType.objects.get(model={model!r}).pk)",
        )
    )


@contextlib.contextmanager
def database_locked(site: MainSite):
    """Hold an exclusive lock on the site's SQLite file: readers wait."""
    path = site.env["DATABASE_URL"].removeprefix("sqlite:///")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


async def test_a_group_change_that_cannot_be_rechecked_disconnects_its_members(
    site, start_sidecar
):
    sidecar = start_sidecar(WS_RECHECK_INTERVAL="none")
    dave = await sidecar.connect(site.token("dave"))  # in product-editors
    admin = await sidecar.connect(site.token("admin"))  # in no group
    group_id = int(
        shell(
            site,
            "from django.contrib.auth.models import Group; "
            "print(Group.objects.get(name='product-editors').pk)",
        )
    )
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    with database_locked(site):
        bus.publish(
            control_channel(site.env["WSSERVER_CHANNEL"]),
            json.dumps({"type": "group", "group_id": group_id}),
        )
        # Its access may be gone and cannot be confirmed: not trusted.
        assert await closed_with(dave, timeout=10) == (1013, "try again later")
    assert admin.close_code is None
    assert "Cannot recheck 1 user(s) after a change of group" in sidecar.log()
    assert "(timed out)" in sidecar.log()
    await admin.close()


async def test_changes_that_send_no_message_are_caught_by_the_periodic_recheck(
    site, start_sidecar
):
    sidecar = start_sidecar(WS_RECHECK_INTERVAL="1")
    alice = await sidecar.connect(site.token("alice"))
    bob = await sidecar.connect(site.token("bob"))
    # QuerySet.update() sends no signal: the publisher cannot tell anyone.
    shell(
        site,
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='alice').update(is_active=False)",
    )
    assert await closed_with(alice, timeout=10) == (1008, "access revoked")

    # A permission given in raw SQL (no m2m_changed) starts delivery too.
    article = content_type_id(site, "article")
    shell(
        site,
        "from django.contrib.auth.models import Permission, User\n"
        "from django.db import connection\n"
        "bob = User.objects.get(username='bob')\n"
        "permission = Permission.objects.get(codename='view_article')\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('INSERT INTO auth_user_user_permissions "
        "(user_id, permission_id) VALUES (%s, %s)', [bob.pk, permission.pk])\n",
    )
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])

    async def bob_receives() -> bool:
        bus.publish(
            site.env["WSSERVER_CHANNEL"], json.dumps({"content_type_id": article})
        )
        try:
            await receive_event(bob, 0.3)
        except TimeoutError:
            return False
        return True

    await eventually(bob_receives, 12, "bob's new permission applied", interval=0)
    await bob.close()


async def test_access_is_rechecked_after_the_bus_comes_back(site, start_sidecar):
    bus = ThrowawayRedis().start()
    try:
        # The site and the sidecar on a Redis of their own, which goes away.
        main_site = MainSite(
            site.env["DATABASE_URL"], bus.url, site.env["WSSERVER_CHANNEL"]
        )
        sidecar = start_sidecar(main_site, WS_RECHECK_INTERVAL="none")
        alice = await sidecar.connect(main_site.token("alice"))
        bus.kill()
        wait_for(lambda: http_status(sidecar.http + "/readyz") == 503, 10, "down")
        # Saved while Redis is away: the control message is lost.
        shell(
            main_site,
            "from django.contrib.auth.models import User\n"
            "alice = User.objects.get(username='alice')\n"
            "alice.is_active = False\n"
            "alice.save()\n",
        )
        bus = ThrowawayRedis(port=bus.port).start()
        # Events flow again only once everyone is rechecked: alice, whose
        # revocation was lost, is sent none of them.
        publisher = redis.Redis.from_url(bus.url)
        article = content_type_id(site, "article")
        received = []

        async def closed() -> bool:
            publisher.publish(
                site.env["WSSERVER_CHANNEL"], json.dumps({"content_type_id": article})
            )
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                received.append(await receive_event(alice, 0.05))
            return alice.close_code is not None

        await eventually(closed, 20, "alice closed", interval=0)
        assert (alice.close_code, alice.close_reason) == (1008, "access revoked")
        assert received == []
    finally:
        bus.kill()


async def test_connections_reach_their_maximum_age(site, start_sidecar):
    sidecar = start_sidecar(
        WS_MAX_CONNECTION_AGE="1", WS_PING_INTERVAL="0.5", WS_PING_TIMEOUT="0.5"
    )
    alice = await sidecar.connect(site.token("alice"))
    assert await closed_with(alice, timeout=5) == (1000, "connection expired")
    # Authenticating again works as usual.
    again = await sidecar.connect(site.token("alice"))
    await assert_no_event(again, 0.2)
    assert again.close_code is None
    await again.close()
