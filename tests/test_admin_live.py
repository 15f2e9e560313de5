"""The live admin (WSSERVER_ADMIN) in headless Chromium: stale-form warnings,
change-list counts and notifications, with the example site and a sidecar.

Two users: dave (the "product-editors" group: may change products) looks at
admin pages in Chromium while admin, a superuser, changes products over HTTP.
Screenshots of the warnings, light and dark, are taken each run; they go to
docs/images/ for the README when WSSERVER_TEST_SCREENSHOTS=1 (else a run
would rewrite tracked files).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from browser import Browser
from chromium import Chromium
from processes import PASSWORD, ROOT, MainSite, SidecarProcess
from waiting import units

pytestmark = pytest.mark.e2e

IMAGES = ROOT / "docs" / "images"
SAVE_SCREENSHOTS = os.environ.get("WSSERVER_TEST_SCREENSHOTS") == "1"
LIVE = "window.wsserverAdmin?.status === 'connected'"
STALE = "document.getElementById('wsserver-stale')?.textContent"
CHANGES = "document.getElementById('wsserver-changes')?.textContent"
# Uncaught errors and console.error calls, recorded from the first script on.
RECORD_ERRORS = """
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection',
  (e) => window.__errors.push(String(e.reason)));
const consoleError = console.error;
console.error = (...args) => {
  window.__errors.push(args.join(' '));
  consoleError(...args);
};
"""


@pytest.fixture(scope="module")
def unstarted_sidecar(tmp_path_factory):
    # Created first for its port: admin pages connect to it.
    return SidecarProcess(tmp_path_factory.mktemp("sidecar"))


@pytest.fixture(scope="module")
def site_env(unstarted_sidecar):
    return {"WSSERVER_WEBSOCKET_URL": unstarted_sidecar.url, "WSSERVER_ADMIN": "true"}


@pytest.fixture(scope="module")
def sidecar(unstarted_sidecar, live_site):
    sidecar = unstarted_sidecar
    sidecar.env.update(
        DATABASE_URL=live_site.env["DATABASE_URL"],
        REDIS_URL=live_site.env["WSSERVER_REDIS_URL"],
        WS_CHANNEL=live_site.env["WSSERVER_CHANNEL"],
        WS_ALLOWED_ORIGINS=live_site.url,
    )
    sidecar.start()
    yield sidecar
    sidecar.stop()


@pytest.fixture(scope="module")
def superuser(live_site) -> Browser:
    browser = Browser(live_site.url)
    browser.login("admin", PASSWORD)
    return browser


class AdminPage:
    """Chromium logged in as a user, showing admin pages."""

    def __init__(self, site: MainSite, username: str):
        self.site = site
        self.session = Browser(site.url)
        self.session.login(username, PASSWORD)
        [sessionid] = [c.value for c in self.session.cookies if c.name == "sessionid"]
        self.chromium = Chromium()
        self.chromium.command("Page.enable")
        self.chromium.command(
            "Page.addScriptToEvaluateOnNewDocument", source=RECORD_ERRORS
        )
        self.chromium.set_cookie(site.url, "sessionid", sessionid)

    def open(self, path: str, live: bool = True) -> None:
        self.chromium.command("Page.navigate", url=self.site.url + path)
        self.chromium.wait_for(
            f"location.pathname === {json.dumps(path)}"
            " && document.readyState === 'complete'"
        )
        if live:
            self.chromium.wait_for(LIVE)

    def evaluate(self, expression: str):
        return self.chromium.evaluate(expression)

    def wait_for(self, expression: str, timeout: float = 15):
        return self.chromium.wait_for(expression, timeout)

    def errors(self) -> list[str]:
        return self.evaluate("window.__errors")

    def screenshot(self, name: str, dark: bool = False) -> None:
        scheme = "dark" if dark else "light"
        self.chromium.command(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )
        self.chromium.command(
            "Emulation.setDeviceMetricsOverride",
            width=1000,
            height=420,
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.chromium.command("Page.captureScreenshot", format="png")["data"]
        image = base64.b64decode(data)
        assert image.startswith(b"\x89PNG"), image[:16]
        if SAVE_SCREENSHOTS:
            IMAGES.mkdir(parents=True, exist_ok=True)
            (IMAGES / f"{name}-{scheme}.png").write_bytes(image)
        self.chromium.command("Emulation.clearDeviceMetricsOverride")

    def close(self) -> None:
        self.chromium.close()


@pytest.fixture
def dave(live_site, sidecar):
    page = AdminPage(live_site, "dave")
    yield page
    page.close()


def product(superuser: Browser, name: str) -> str:
    """Add a product as the superuser; return its pk."""
    superuser.add("product", name=name, price="10")
    status, html = superuser.request("/admin/catalog/product/")
    assert status == 200
    pks = re.findall(r'/admin/catalog/product/(\d+)/change/">' + re.escape(name), html)
    assert pks, f"{name} not in the change list"
    return pks[0]


def test_a_change_by_someone_else_warns_the_open_form(
    live_site, sidecar, superuser, dave
):
    pk = product(superuser, "Teapot")
    path = f"/admin/catalog/product/{pk}/change/"
    dave.open(path)
    assert dave.evaluate(STALE) is None
    # The superuser, in a browser of their own, saves the same form.
    other = AdminPage(live_site, "admin")
    try:
        other.open(path)
        other.evaluate("document.querySelector('input[name=price]').value = '12'")
        other.evaluate("document.querySelector('input[name=_save]').click()")
        other.wait_for("location.pathname === '/admin/catalog/product/'")
        # Their own save does not warn them.
        assert other.evaluate(STALE) is None
    finally:
        other.close()
    text = dave.wait_for(STALE, 1)
    assert text.startswith("Changed by admin a few seconds ago: Changed Price.")
    assert text.endswith("Reload to see the current version.")
    assert (
        dave.evaluate(
            "document.querySelector('#wsserver-stale').closest('[aria-live]')"
            ".getAttribute('aria-live')"
        )
        == "polite"
    )
    dave.screenshot("admin-stale-form")
    dave.screenshot("admin-stale-form", dark=True)
    # Saving the stale form asks first; refused, nothing is saved.
    dave.evaluate("window.confirm = (q) => { window.asked = q; return false; }")
    dave.evaluate("document.querySelector('input[name=_save]').click()")
    assert dave.wait_for("window.asked").startswith("admin changed this object")
    assert dave.evaluate("location.pathname") == path
    # Accepted, the save goes through.
    dave.evaluate("window.confirm = () => true")
    dave.evaluate("document.querySelector('input[name=_save]').click()")
    dave.wait_for("location.pathname === '/admin/catalog/product/'")
    assert dave.errors() == []


def test_a_deletion_warns_too_and_own_saves_do_not(live_site, sidecar, superuser, dave):
    pk = product(superuser, "Kettle")
    path = f"/admin/catalog/product/{pk}/change/"
    dave.open(path)
    # Dave's own save, from another tab or session: no warning. The
    # notification that follows it arrives after it, on the same connection.
    dave.session.change("product", pk, name="Kettle", price="11")
    live_site.manage(
        "wsserver_publish", "sentinel", "--data", '"after"', "--user", "dave"
    )
    dave.wait_for("!!document.querySelector('.wsserver-notice')")
    assert dave.evaluate(STALE) is None
    superuser.delete("product", pk)
    assert dave.wait_for(STALE, 1).startswith("Deleted by admin a few seconds ago.")


def test_the_change_list_counts_changes(live_site, sidecar, superuser, dave):
    dave.open("/admin/catalog/product/")
    pk = product(superuser, "Mug")
    assert dave.wait_for(CHANGES).startswith("1 change since this page was loaded.")
    superuser.change("product", pk, name="Mug", price="3")
    superuser.delete("product", pk)
    text = dave.wait_for(f"{CHANGES}?.startsWith('3 ') && {CHANGES}")
    assert text == "3 changes since this page was loaded. Reload"
    dave.evaluate("document.getElementById('wsserver-changes').scrollIntoView()")
    dave.screenshot("admin-change-list")
    dave.screenshot("admin-change-list", dark=True)
    assert dave.errors() == []


def test_users_see_only_what_they_may(live_site, sidecar, superuser):
    # alice may view articles only: a product's change never reaches her
    # page; an article's does.
    alice = AdminPage(live_site, "alice")
    try:
        alice.open("/admin/catalog/article/")
        product(superuser, "Hidden")
        superuser.add("article", title="Shown", body="x")
        assert alice.wait_for(CHANGES).startswith("1 change since")
        assert (
            alice.evaluate("document.querySelectorAll('.wsserver-admin li').length")
            == 1
        )
    finally:
        alice.close()


def test_notifications_appear_on_every_admin_page(live_site, sidecar, dave):
    dave.open("/admin/")
    live_site.manage(
        "wsserver_publish",
        "export.ready",
        "--data",
        json.dumps({"message": "Your export is ready."}),
        "--user",
        "dave",
    )
    notice = dave.wait_for("document.querySelector('.wsserver-notice')?.textContent")
    assert notice.startswith("Your export is ready.")
    # Keyboard reachable: the dismiss button takes the focus, and removes it.
    dave.evaluate("document.querySelector('.wsserver-dismiss').focus()")
    assert dave.evaluate("document.activeElement.className") == "wsserver-dismiss"
    dave.evaluate("document.activeElement.click()")
    assert dave.evaluate("document.querySelector('.wsserver-notice') === null")
    # The documented hook: a site renders its own.
    dave.evaluate(
        "document.addEventListener('wsserver:notification', (e) => {"
        "  e.preventDefault(); window.rendered = e.detail.data.message; })"
    )
    live_site.manage(
        "wsserver_publish",
        "export.ready",
        "--data",
        json.dumps({"message": "Another one."}),
        "--user",
        "dave",
    )
    assert dave.wait_for("window.rendered") == "Another one."
    assert dave.evaluate("document.querySelector('.wsserver-notice') === null")
    assert dave.errors() == []


def test_the_admin_works_as_before_with_the_sidecar_down(
    live_site, sidecar, superuser, dave
):
    pk = product(superuser, "Offline")
    sidecar.stop()
    try:
        path = f"/admin/catalog/product/{pk}/change/"
        dave.open(path, live=False)
        dave.wait_for("window.wsserverAdmin?.status === 'disconnected'")
        dave.evaluate("document.querySelector('input[name=price]').value = '99'")
        dave.evaluate("document.querySelector('input[name=_save]').click()")
        dave.wait_for("location.pathname === '/admin/catalog/product/'")
        dave.wait_for("document.readyState === 'complete'")
        assert "was changed successfully" in dave.evaluate("document.body.textContent")
        assert dave.errors() == []
        assert dave.evaluate("document.querySelector('.wsserver-admin li') === null")
    finally:
        sidecar.start()


def test_the_strings_are_translatable(live_site):
    # Django's JavaScript catalog of the publisher app, as admin pages load it.
    script = (
        "from django.test import RequestFactory\n"
        "from django.utils import translation\n"
        "from django.views.i18n import JavaScriptCatalog\n"
        "view = JavaScriptCatalog.as_view(packages=['wsserver.publisher'])\n"
        "with translation.override('fr'):\n"
        "    print(view(RequestFactory().get('/')).content.decode())\n"
    )
    catalog = live_site.manage("shell", "-c", script)
    assert "Modifi\\u00e9 par %(user)s %(when)s" in catalog or (
        "Modifié par %(user)s %(when)s" in catalog
    )
    assert "modifications depuis le chargement de cette page" in catalog


def test_the_system_check_names_what_is_missing(live_site):
    def check(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(live_site.manage_py), "check"],
            env={**live_site.env, **env},
            capture_output=True,
            text=True,
            timeout=units(60),
        )

    assert check().returncode == 0
    wrong = check(WSSERVER_WEBSOCKET_URL="https://ws.example.com/")
    assert wrong.returncode != 0
    assert "wsserver.E001" in wrong.stderr
    assert "WSSERVER_URL" in wrong.stderr
    assert check(WSSERVER_ADMIN="false", WSSERVER_WEBSOCKET_URL="x").returncode == 0
