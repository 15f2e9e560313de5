"""Live revocation: access changes made on the main site reach every process.

The example site on PostgreSQL with two sidecar processes. Changes are made
in the admin's forms (or, for passwords, with the ORM in the site's process);
the publisher's signals send control messages that the sidecars act on.
"""

from __future__ import annotations

import time

import pytest
from browser import Browser
from clients import assert_no_event, closed_with, receive_event
from processes import PASSWORD, MainSite, started_sidecars
from waiting import units

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(postgres_site):
    return postgres_site


@pytest.fixture(scope="module")
def sidecars(site, tmp_path_factory):
    yield from started_sidecars(site, tmp_path_factory)


@pytest.fixture
def admin(live_site):
    """Demo users as seeded (again: tests change them), and the admin logged in."""
    live_site.manage("seed_demo", "--password", PASSWORD)
    browser = Browser(live_site.url)
    browser.login("admin", PASSWORD)
    return browser


def pk_of(site: MainSite, model: str, **lookup: str) -> str:
    code = (
        f"from django.apps import apps; "
        f"print(apps.get_model({model!r}).objects.get(**{lookup!r}).pk)"
    )
    return site.manage("shell", "--verbosity", "0", "-c", code).strip()


async def test_deactivating_a_user_closes_their_connections_on_every_process(
    site, sidecars, admin
):
    alice = [await s.connect(site.token("alice")) for s in sidecars]
    superuser = await sidecars[0].connect(site.token("admin"))

    alice_pk = pk_of(site, "auth.User", username="alice")
    status, _ = admin.submit_form(
        f"/admin/auth/user/{alice_pk}/change/", {"is_active": None}
    )
    assert status == 200
    changed_at = time.monotonic()
    for websocket in alice:
        assert await closed_with(websocket, timeout=1) == (1008, "access revoked")
    assert time.monotonic() - changed_at < units(1)

    # The admin's own LogEntry for the change reaches the superuser, and
    # nothing else does: control messages are never forwarded.
    logged = await receive_event(superuser)
    assert (logged["model"], logged["action"]) == ("user", "change")
    await assert_no_event(superuser)

    refused = await sidecars[1].connect(site.token("alice"))
    assert await closed_with(refused) == (1011, "authentication failed")
    await superuser.close()


async def test_a_group_permission_change_applies_to_the_next_event(
    site, sidecars, admin
):
    dave = [await s.connect(site.token("dave")) for s in sidecars]
    superuser = await sidecars[0].connect(site.token("admin"))
    group = pk_of(site, "auth.Group", name="product-editors")
    change_product = pk_of(site, "auth.Permission", codename="change_product")

    admin.add("product", name="Before", price="1")
    for websocket in [*dave, superuser]:
        assert (await receive_event(websocket))["object"] == "Before"

    # Remove the group's permission, then change a product at once.
    admin.submit_form(f"/admin/auth/group/{group}/change/", {"permissions": []})
    assert (await receive_event(superuser))["model"] == "group"
    admin.add("product", name="Hidden", price="1")
    assert (await receive_event(superuser))["object"] == "Hidden"
    for websocket in dave:
        await assert_no_event(websocket)
        assert websocket.close_code is None  # still connected

    # Granting it back works the same way.
    admin.submit_form(
        f"/admin/auth/group/{group}/change/", {"permissions": [change_product]}
    )
    admin.add("product", name="Visible", price="1")
    for websocket in dave:
        assert (await receive_event(websocket))["object"] == "Visible"
    for websocket in [*dave, superuser]:
        await websocket.close()


async def test_a_direct_permission_granted_in_the_admin_starts_delivery(
    site, sidecars, admin
):
    bob = await sidecars[1].connect(site.token("bob"))
    admin.add("supplier", name="Unseen", email="")
    await assert_no_event(bob)

    bob_pk = pk_of(site, "auth.User", username="bob")
    view_supplier = pk_of(site, "auth.Permission", codename="view_supplier")
    admin.submit_form(
        f"/admin/auth/user/{bob_pk}/change/", {"user_permissions": [view_supplier]}
    )
    admin.add("supplier", name="Seen", email="")
    assert (await receive_event(bob))["object"] == "Seen"
    await bob.close()


async def test_removing_a_user_from_a_group_by_deleting_the_group(
    site, sidecars, admin
):
    dave = await sidecars[0].connect(site.token("dave"))
    group = pk_of(site, "auth.Group", name="product-editors")
    admin.request(f"/admin/auth/group/{group}/delete/", {"post": "yes"})
    admin.add("product", name="After the group", price="1")
    await assert_no_event(dave)
    assert dave.close_code is None
    await dave.close()


async def test_a_password_change_revokes_connections(site, sidecars, admin):
    alice = await sidecars[0].connect(site.token("alice"))
    site.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "user = User.objects.get(username='alice')\n"
        "user.set_password('another password')\n"
        "user.save()\n",
    )
    assert await closed_with(alice, timeout=1) == (1008, "access revoked")


async def test_saving_a_user_without_changing_access_keeps_the_connection(
    site, sidecars, admin
):
    alice = await sidecars[0].connect(site.token("alice"))
    alice_pk = pk_of(site, "auth.User", username="alice")
    admin.submit_form(f"/admin/auth/user/{alice_pk}/change/", {"first_name": "Alice"})
    admin.add("article", title="Still here", body="")
    assert (await receive_event(alice))["object"] == "Still here"
    await alice.close()
