"""A main site with a custom user model: UUID pk, email as username, accounts_user.

The sidecar is configured for it with the WS_USER_* variables only.
"""

from __future__ import annotations

import pytest
from browser import Browser
from clients import assert_no_event, closed_with, receive_event
from processes import PASSWORD, SidecarProcess

pytestmark = pytest.mark.e2e

CUSTOM_USER = {
    "WS_USER_TABLE": "accounts_user",
    "WS_USER_PK": "uuid",
    "WS_USERNAME_FIELD": "email",
}


@pytest.fixture(scope="module")
def site_env():
    return {"EXAMPLE_CUSTOM_USER": "1"}


@pytest.fixture(scope="module")
def site(postgres_site):
    return postgres_site


@pytest.fixture(scope="module")
def sidecar_env():
    return CUSTOM_USER


async def test_custom_user_model(live_site, start_sidecar):
    site = live_site
    sidecar = start_sidecar()
    admin, alice, bob = (Browser(site.url) for _ in ["admin", "alice", "bob"])
    admin.login("admin@example.com", PASSWORD)
    alice.login("alice@example.com", PASSWORD)
    bob.login("bob@example.com", PASSWORD)
    admin_ws = await sidecar.connect(admin.token())
    alice_ws = await sidecar.connect(alice.token())
    bob_ws = await sidecar.connect(bob.token())

    admin.add("article", title="Custom users", body="x")
    event = await receive_event(admin_ws)
    assert event["user"] == "admin@example.com"
    assert (await receive_event(alice_ws)) == event
    await assert_no_event(bob_ws)

    inactive = await sidecar.connect(site.token("carol@example.com"))
    assert await closed_with(inactive) == (1011, "authentication failed")
    for websocket in (admin_ws, alice_ws, bob_ws):
        await websocket.close()


def test_a_wrong_pk_type_is_reported_at_start_up(site, tmp_path):
    sidecar = SidecarProcess.for_site(
        site, tmp_path, **{**CUSTOM_USER, "WS_USER_PK": "int"}
    )
    sidecar.start(wait_ready=False)
    assert sidecar.wait_exit() == 1
    log = sidecar.log()
    assert "WS_USER_PK=int" in log
    assert "Set WS_USER_PK=uuid" in log


def test_a_missing_table_is_reported_at_start_up(site, tmp_path):
    sidecar = SidecarProcess.for_site(
        site, tmp_path, **{**CUSTOM_USER, "WS_USER_TABLE": "users"}
    )
    sidecar.start(wait_ready=False)
    assert sidecar.wait_exit() == 1
    assert "user table 'users' does not exist" in sidecar.log()
