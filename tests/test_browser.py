"""The JavaScript client in real headless Chromium, on the example site's page.

A permitted user sees an admin change appear on the page; after the sidecar
restarts the page reconnects by itself and receives the next event; a user
without permission sees nothing.
"""

from __future__ import annotations

import os

import pytest
from browser import Browser
from chromium import Chromium
from processes import PASSWORD, MainSite, Sidecar

pytestmark = pytest.mark.e2e

EVENTS = "[...document.querySelectorAll('li.event')].map(li => li.textContent)"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    # Created first for its port: the site's page connects to it.
    return Sidecar(tmp_path_factory.mktemp("sidecar"))


@pytest.fixture(scope="module")
def site(sidecar, redis_url, tmp_path_factory):
    database = tmp_path_factory.mktemp("browser") / "site.sqlite3"
    main_site = MainSite(
        f"sqlite:///{database}",
        redis_url,
        f"browser-{os.getpid()}",
        WSSERVER_WEBSOCKET_URL=sidecar.url,
    )
    main_site.manage("migrate", "--noinput")
    main_site.manage("seed_demo", "--password", PASSWORD)
    main_site.start()
    sidecar.env.update(
        DATABASE_URL=main_site.env["DATABASE_URL"],
        REDIS_URL=main_site.env["WSSERVER_REDIS_URL"],
        WS_CHANNEL=main_site.env["WSSERVER_CHANNEL"],
    )
    sidecar.start()
    yield main_site
    sidecar.stop()
    main_site.stop()


def page_for(site: MainSite, username: str) -> Chromium:
    """Chromium showing the example page, logged in as this user."""
    session = Browser(site.url)
    session.login(username, PASSWORD)
    [sessionid] = [c.value for c in session.cookies if c.name == "sessionid"]
    chromium = Chromium()
    chromium.set_cookie(site.url, "sessionid", sessionid)
    chromium.open(site.url + "/")
    chromium.wait_for("document.getElementById('status')?.textContent === 'connected'")
    return chromium


def test_the_page_shows_events_and_survives_a_sidecar_restart(site, sidecar):
    admin = Browser(site.url)
    admin.login("admin", PASSWORD)
    alice = page_for(site, "alice")
    bob = page_for(site, "bob")
    try:
        admin.add("article", title="Seen in Chromium", body="x")
        events = alice.wait_for(f"{EVENTS}.length && {EVENTS}")
        assert events == ['admin addition article "Seen in Chromium"']

        sidecar.stop()
        alice.wait_for("document.getElementById('status').textContent !== 'connected'")
        sidecar.start()
        alice.wait_for(
            "document.getElementById('status').textContent === 'connected'", 40
        )
        admin.add("article", title="After the restart", body="x")
        events = alice.wait_for(f"{EVENTS}.length === 2 && {EVENTS}")
        assert events[0] == 'admin addition article "After the restart"'

        # Bob may not see articles: his page stays connected and empty.
        bob.wait_for(
            "document.getElementById('status').textContent === 'connected'", 40
        )
        assert bob.evaluate(f"{EVENTS}.length") == 0
    finally:
        alice.close()
        bob.close()
