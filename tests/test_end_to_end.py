"""End to end: the example site and sidecar processes share a real database.

Changes are made through the example site's admin pages over HTTP; events go
through the real publisher app, a real Redis and real sidecar processes, and
arrive in real websockets clients. Every test runs on PostgreSQL, SQLite and
MariaDB.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys

import pytest
from browser import Browser
from clients import assert_no_event, authenticate, closed_with, receive_event
from processes import PASSWORD, ROOT, MainSite, SidecarProcess
from waiting import units

pytestmark = pytest.mark.e2e


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgres_site", id="postgresql"),
        pytest.param("sqlite_site", id="sqlite"),
        pytest.param("mariadb_site", id="mariadb"),
    ],
)
def site(request) -> MainSite:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def sidecar(site, tmp_path_factory):
    process = SidecarProcess.for_site(site, tmp_path_factory.mktemp("sidecar"))
    yield process.start()
    assert process.stop() == 0


@pytest.fixture(scope="module")
def browsers(live_site):
    """Logged-in admin sessions, one per demo user who can log in."""
    sessions = {}
    for username in ["admin", "alice", "bob", "dave"]:
        sessions[username] = Browser(live_site.url)
        sessions[username].login(username, PASSWORD)
    return sessions


async def connect_as(sidecar: SidecarProcess, browser: Browser):
    """Fetch a fresh token from the site, as a page would, and connect."""
    return await sidecar.connect(browser.token())


async def test_admin_changes_reach_a_superuser(sidecar, browsers):
    admin = browsers["admin"]
    websocket = await connect_as(sidecar, admin)

    admin.add("article", title="Hello", body="First post", published="on")
    added = await receive_event(websocket)
    assert added["action"] == "addition"
    assert added["model"] == "article"
    assert added["object"] == "Hello"
    assert added["user"] == "admin"
    assert isinstance(added["content_type_id"], int)
    assert added["timestamp"]
    pk = added["object_id"]

    admin.change("article", pk, title="Hello again", body="Edited")
    changed = await receive_event(websocket)
    assert changed["action"] == "change"
    assert changed["object"] == "Hello again"
    assert changed["object_id"] == pk
    assert "Title" in changed["message"] or "title" in changed["message"]

    admin.delete("article", pk)
    deleted = await receive_event(websocket)
    assert deleted["action"] == "deletion"
    assert deleted["object_id"] == pk
    await websocket.close()


async def test_events_reach_only_users_allowed_to_see_the_model(sidecar, browsers):
    admin = await connect_as(sidecar, browsers["admin"])
    alice = await connect_as(sidecar, browsers["alice"])  # view_article
    dave = await connect_as(sidecar, browsers["dave"])  # group: change_product
    bob = await connect_as(sidecar, browsers["bob"])  # no permission

    browsers["admin"].add("article", title="For Alice", body="x")
    article = await receive_event(admin)
    assert (await receive_event(alice)) == article
    await assert_no_event(dave)
    await assert_no_event(bob)

    browsers["admin"].add("product", name="Widget", price="9.99")
    product = await receive_event(admin)
    assert product["model"] == "product"
    assert (await receive_event(dave)) == product
    await assert_no_event(alice)
    await assert_no_event(bob)

    for websocket in (admin, alice, dave, bob):
        await websocket.close()


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda site: site.token("carol"), id="inactive user"),
        pytest.param(
            lambda site: site.token("alice", SECRET_KEY="another-site-secret-key"),
            id="other SECRET_KEY",
        ),
        pytest.param(lambda site: site.token("alice") + "x", id="tampered token"),
        pytest.param(lambda site: "not a token", id="garbage"),
        pytest.param(lambda site: "", id="empty"),
        pytest.param(lambda site: b"\x00\x01binary", id="binary frame"),
    ],
)
async def test_refused_tokens_close_with_1011_and_the_server_goes_on(
    site, sidecar, browsers, make_token
):
    refused = await authenticate(sidecar.url, make_token(site))
    assert await closed_with(refused) == (1011, "authentication failed")

    # The server keeps serving.
    websocket = await connect_as(sidecar, browsers["admin"])
    browsers["admin"].add("supplier", name="After refusal", email="s@example.com")
    assert (await receive_event(websocket))["object"] == "After refusal"
    await websocket.close()


async def test_deleted_user_token_is_refused(site, sidecar, browsers):
    site.manage("shell", "-c", _CREATE_USER_SCRIPT.format(name="erin"))
    token = site.token("erin")
    site.manage("shell", "-c", _DELETE_USER_SCRIPT.format(name="erin"))
    refused = await authenticate(sidecar.url, token)
    assert await closed_with(refused) == (1011, "authentication failed")


_CREATE_USER_SCRIPT = """
from django.contrib.auth import get_user_model
get_user_model().objects.create_user("{name}", password="x")
"""
_DELETE_USER_SCRIPT = """
from django.contrib.auth import get_user_model
get_user_model().objects.filter(username="{name}").delete()
"""


async def test_expired_token_is_refused(site, start_sidecar):
    # Long enough for a fresh token to be checked on a busy machine.
    max_age = math.ceil(units(3))
    process = start_sidecar(SESAME_MAX_AGE=str(max_age))
    token = site.token("admin")
    # Time passing is the test: the token expires (a second after max_age).
    await asyncio.sleep(max_age + units(1))
    refused = await authenticate(process.url, token)
    assert await closed_with(refused) == (1011, "authentication failed")
    fresh = await authenticate(process.url, site.token("admin"))
    await assert_no_event(fresh, 0.3)  # open, authenticated, nothing to say
    assert fresh.close_code is None
    await fresh.close()


async def test_bulk_delete_publishes_one_event_per_object(sidecar, browsers):
    admin = browsers["admin"]
    websocket = await connect_as(sidecar, admin)
    pks = []
    for name in ["Bolt", "Nut", "Screw"]:
        admin.add("product", name=name, price="1.00")
        pks.append((await receive_event(websocket))["object_id"])

    admin.delete_selected("product", pks)
    deleted = [await receive_event(websocket) for _ in pks]
    assert sorted(event["object_id"] for event in deleted) == sorted(pks)
    assert {event["action"] for event in deleted} == {"deletion"}
    await assert_no_event(websocket)
    await websocket.close()


async def test_two_sidecars_share_one_redis(sidecar, browsers, start_sidecar):
    second = start_sidecar()
    on_first = await connect_as(sidecar, browsers["alice"])
    on_second = await connect_as(second, browsers["alice"])
    browsers["admin"].add("article", title="Everywhere", body="x")
    assert (await receive_event(on_first))["object"] == "Everywhere"
    assert (await receive_event(on_second))["object"] == "Everywhere"
    await on_first.close()
    await on_second.close()


def run_in_sidecar_project(site: MainSite, code: str) -> subprocess.CompletedProcess:
    """Run Python code with the sidecar's Django project on the site's database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings_auth",
        "DATABASE_URL": site.env["DATABASE_URL"],
        "SECRET_KEY": site.env["SECRET_KEY"],
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=units(60),
    )


def test_migrating_with_the_sidecar_settings_is_refused(site):
    result = run_in_sidecar_project(
        site,
        "import sys; from django.core.management import execute_from_command_line;"
        "execute_from_command_line(['django-admin', 'migrate', '--noinput'])",
    )
    assert result.returncode != 0
    assert "wsserver never changes the main site's database" in result.stderr


def test_the_sidecar_cannot_write_to_the_database(site):
    result = run_in_sidecar_project(
        site,
        "import django; django.setup()\n"
        "from django.contrib.auth.models import Group\n"
        "print(Group.objects.count())\n"
        "Group.objects.create(name='written by the sidecar')\n",
    )
    assert result.returncode != 0
    assert result.stdout.strip().isdigit()  # reading works
    # PostgreSQL: "read-only transaction"; SQLite: "readonly database";
    # MariaDB: "READ ONLY transaction".
    error = result.stderr.lower()
    assert any(w in error for w in ["read-only", "readonly", "read only"]), error
