"""The JavaScript client in real headless Chromium, on the example site's page.

A permitted user sees an admin change appear on the page; after the sidecar
restarts the page reconnects by itself, is sent what it missed meanwhile and
receives the next event; when it missed more than the history holds it is
told so; a user without permission sees nothing, and once deactivated the
page stops instead of retrying. An app event that the site publishes for one
user (publish(), here through ``manage.py wsserver_publish``) reaches that
user's onEvent callback, with its id as the resume position, and nobody
else's; so does the notification the page's button asks the site for.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from browser import Browser
from chromium import Chromium
from processes import PASSWORD, MainSite, SidecarProcess
from waiting import units

pytestmark = pytest.mark.e2e

EVENTS = "[...document.querySelectorAll('li.event')].map(li => li.textContent)"
APP_EVENTS = "[...document.querySelectorAll('li.app-event')].map(li => li.textContent)"
LOG = "[...document.querySelectorAll('#log li')].map(li => li.textContent)"
STATUS = "document.getElementById('status')?.textContent"
# The sidecar sends a resuming client at most this many missed events.
HISTORY = 2


@pytest.fixture(scope="module")
def unstarted_sidecar(tmp_path_factory):
    # Created first for its port: the site's page connects to it.
    return SidecarProcess(
        tmp_path_factory.mktemp("sidecar"), WS_HISTORY_SIZE=str(HISTORY)
    )


@pytest.fixture(scope="module")
def site_env(unstarted_sidecar):
    return {"WSSERVER_WEBSOCKET_URL": unstarted_sidecar.url}


@pytest.fixture(scope="module")
def sidecar(unstarted_sidecar, live_site):
    sidecar = unstarted_sidecar
    sidecar.env.update(
        DATABASE_URL=live_site.env["DATABASE_URL"],
        REDIS_URL=live_site.env["WSSERVER_REDIS_URL"],
        WS_CHANNEL=live_site.env["WSSERVER_CHANNEL"],
        # As in production: only the site's own pages may connect.
        WS_ALLOWED_ORIGINS=live_site.url,
    )
    sidecar.start()
    yield sidecar
    sidecar.stop()


def page_for(site: MainSite, username: str) -> Chromium:
    """Chromium showing the example page, logged in as this user."""
    session = Browser(site.url)
    session.login(username, PASSWORD)
    [sessionid] = [c.value for c in session.cookies if c.name == "sessionid"]
    chromium = Chromium()
    chromium.set_cookie(site.url, "sessionid", sessionid)
    chromium.open(site.url + "/")
    chromium.wait_for(f"{STATUS} === 'connected'")
    return chromium


def probe(page: Chromium, sidecar: SidecarProcess) -> None:
    """Connect wsserver.js once more from this page, recording what reaches
    onEvent as it is (whatever the page itself renders) in window.received."""
    page.evaluate(
        "window.received = [];"
        "import('/static/wsserver/wsserver.js').then(({ connect }) => {"
        "  window.probe = connect({"
        f"    url: {json.dumps(sidecar.url)},"
        "    onEvent(event) { window.received.push(event); },"
        "    onStatus(status) { window.probeStatus = status; },"
        "  });"
        "});"
    )
    page.wait_for("window.probeStatus === 'connected'")


def restart(sidecar: SidecarProcess, page: Chromium, while_down) -> None:
    """Stop the sidecar, do something meanwhile, start it on the same port."""
    sidecar.stop()
    page.wait_for(f"{STATUS} !== 'connected'")
    while_down()
    sidecar.start()
    # Full-jitter backoff: the page may wait several seconds before retrying.
    page.wait_for(f"{STATUS} === 'connected'", 40)


def test_the_page_shows_events_and_survives_sidecar_restarts(live_site, sidecar, admin):
    site = live_site
    alice = page_for(site, "alice")
    bob = page_for(site, "bob")
    try:
        admin.add("article", title="Seen in Chromium", body="x")
        events = alice.wait_for(f"{EVENTS}.length && {EVENTS}")
        assert events == ['admin addition article "Seen in Chromium"']
        first_id = alice.evaluate("document.querySelector('li.event').dataset.id")
        assert re.fullmatch(r"\d+-\d+", first_id), first_id

        # Restart: what was published meanwhile is replayed on resume, then
        # live events follow.
        restart(
            sidecar,
            alice,
            lambda: admin.add("article", title="While away", body="x"),
        )
        admin.add("article", title="After the restart", body="x")
        events = alice.wait_for(f"{EVENTS}.length === 3 && {EVENTS}")
        assert events == [
            'admin addition article "After the restart"',
            'admin addition article "While away"',
            'admin addition article "Seen in Chromium"',
        ]
        assert "disconnected (1012 server restarting)" in alice.evaluate(LOG)

        # Away for more than the history holds: the page is told (onGap),
        # nothing is replayed, and live events go on.
        def miss_too_many():
            for number in range(HISTORY + 1):
                admin.add("article", title=f"Missed {number}", body="x")

        restart(sidecar, alice, miss_too_many)
        alice.wait_for("document.querySelector('li.gap') !== null")
        admin.add("article", title="After the gap", body="x")
        events = alice.wait_for(f"{EVENTS}.length === 4 && {EVENTS}")
        assert events[0] == 'admin addition article "After the gap"'
        assert not any("Missed" in event for event in events)

        # Bob may not see articles: his page went through the same restarts
        # and is connected, with nothing to show.
        bob.wait_for(f"{STATUS} === 'connected'", 40)
        assert bob.evaluate(f"{EVENTS}.length") == 0

        # Bob is deactivated: the sidecar closes his connection (1008), the
        # page asks for a new token, is told he is logged out, and stops.
        bob_pk = site.manage(
            "shell",
            "--verbosity",
            "0",
            "-c",
            "from django.contrib.auth.models import User; "
            "print(User.objects.get(username='bob').pk)",
        ).strip()
        status, _ = admin.submit_form(
            f"/admin/auth/user/{bob_pk}/change/", {"is_active": None}
        )
        assert status == 200
        # After the restarts the page's backoff may have grown to 16 s or 32 s
        # (it resets once a connection lasted 10 s): it asks for a token then.
        bob.wait_for(f"{STATUS} === 'logged-out'", 40)
        log = bob.evaluate(LOG)
        revoked = log.index("disconnected (1008 access revoked)")
        assert log[revoked + 1 :] == ["connecting", "logged-out"]
        # Time passing is the test: longer than the first backoff, and no
        # retry follows.
        time.sleep(units(1.5))
        assert bob.evaluate(LOG) == log
    finally:
        alice.close()
        bob.close()


def test_app_events_reach_only_their_user(live_site, sidecar):
    site = live_site
    alice = page_for(site, "alice")
    dave = page_for(site, "dave")
    try:
        probe(alice, sidecar)
        probe(dave, sidecar)
        # Dave's event first: once Alice has hers, his was already routed
        # (the sidecar handles bus messages in order), and not to her.
        site.manage(
            "wsserver_publish", "test.for-dave", "--data", '{"n":2}', "--user", "dave"
        )
        site.manage(
            "wsserver_publish", "test.hello", "--data", '{"n":1}', "--user", "alice"
        )
        received = alice.wait_for("window.received.length && window.received")
        [event] = received
        assert list(event) == ["id", "event", "data"], event
        assert event["event"] == "test.hello"
        assert event["data"] == {"n": 1}
        assert re.fullmatch(r"\d+-\d+", event["id"]), event
        # The client resumes from app events too.
        assert alice.evaluate("window.probe.lastEventId") == event["id"]

        [event] = dave.wait_for("window.received.length && window.received")
        assert (event["event"], event["data"]) == ("test.for-dave", {"n": 2})
        assert dave.evaluate("window.probe.lastEventId") == event["id"]
        assert alice.evaluate("window.received.length") == 1

        # The page's own onEvent shows them too, each on its user's page.
        assert alice.wait_for(f"{APP_EVENTS}.length && {APP_EVENTS}") == [
            'test.hello {"n":1}'
        ]
        assert dave.wait_for(f"{APP_EVENTS}.length && {APP_EVENTS}") == [
            'test.for-dave {"n":2}'
        ]

        # The page's button: the site's view publishes for its user only.
        alice.evaluate("document.querySelector('#notify button').click()")
        notification = "li.app-event[data-event='example.notification']"
        text = alice.wait_for(f'document.querySelector("{notification}")?.textContent')
        assert text.startswith("Hello alice,"), text
        dave.evaluate("document.querySelector('#notify button').click()")
        dave.wait_for(f'document.querySelector("{notification}") !== null')
        # Dave's page has his notification only (Alice's came first).
        texts = dave.evaluate(
            f'[...document.querySelectorAll("{notification}")]'
            ".map(li => li.textContent)"
        )
        assert [text.split(",")[0] for text in texts] == ["Hello dave"], texts
        assert (
            alice.evaluate(f'document.querySelectorAll("{notification}").length') == 1
        )
    finally:
        alice.close()
        dave.close()
