"""A main site and its sidecar on different Django (and Python) versions.

The supported stacks (README, "Supported versions") are Python 3.11 with
Django 5.2 and Python 3.13 with Django 6.1; a site may upgrade before or
after its sidecars. Here the example site runs on one stack and the sidecar
on the other, both ways, over PostgreSQL, MariaDB and SQLite: the site's
tokens (its token view and ``manage.py ws_token``) are accepted by the
sidecar, a forged one is refused, and an admin change and an app event
(``manage.py wsserver_publish``) reach the right users.

The other stack is the virtualenv that ``make stacks`` creates
(WSSERVER_TEST_OTHER_PYTHON names another interpreter). Without it these
tests fail, saying how to make it: they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import django
import pytest
from browser import Browser
from clients import assert_no_event, authenticate, closed_with, receive_event
from processes import PASSWORD, ROOT, MainSite, SidecarProcess
from waiting import units

pytestmark = pytest.mark.e2e

# The virtualenv of each supported stack, as the Makefile names them.
STACKS = {
    "py3.11-django5.2": ROOT / ".venv" / "bin" / "python",
    "py3.13-django6.1": ROOT / ".venv-py3.13-django6.1" / "bin" / "python",
}


def django_version(python: str | Path) -> str:
    """The Django version (major.minor) that ``python`` imports."""
    result = subprocess.run(
        [str(python), "-c", "import django; print(django.get_version())"],
        capture_output=True,
        text=True,
        timeout=units(30),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{python} cannot import Django:\n{result.stderr}")
    return ".".join(result.stdout.strip().split(".")[:2])


HERE = ".".join(django.get_version().split(".")[:2])


@pytest.fixture(scope="module")
def other_python() -> str:
    """The interpreter of the other stack: a Django other than this one's."""
    named = os.environ.get("WSSERVER_TEST_OTHER_PYTHON")
    candidates = [Path(named)] if named else list(STACKS.values())
    for python in candidates:
        if python.exists() and django_version(python) != HERE:
            return str(python)
    if named:
        pytest.fail(
            f"WSSERVER_TEST_OTHER_PYTHON={named} does not exist or runs Django "
            f"{HERE}, as this run does: name another stack's python"
        )
    missing = [
        f"{venv.parent.parent.name}/ ({name})"
        for name, venv in STACKS.items()
        if not venv.exists()
    ]
    pytest.fail(
        f"no virtualenv of a stack other than Django {HERE} "
        f"(missing: {', '.join(missing) or 'none'}): run `make stacks` to make "
        "both stacks' virtualenvs"
    )


# Each way once, each database once: the stacks' own runs cover every
# database on each stack (Makefile, scripts/test-stacks.sh).
COMBINATIONS = [
    pytest.param(("postgresql", "here", "other"), id="postgresql-other-sidecar"),
    pytest.param(("mysql", "other", "here"), id="mysql-other-site"),
    pytest.param(("sqlite", "here", "other"), id="sqlite-other-sidecar"),
]


@pytest.fixture(scope="module", params=COMBINATIONS)
def cross(request, other_python) -> tuple[str, dict[str, str]]:
    """The database and the interpreters of the site and of the sidecar."""
    backend, site, sidecar = request.param
    choose = {"here": sys.executable, "other": other_python}
    return backend, {"site": choose[site], "sidecar": choose[sidecar]}


@pytest.fixture(scope="module")
def pythons(cross) -> dict[str, str]:
    return cross[1]


@pytest.fixture(scope="module")
def cross_site(request, cross, redis_url, tmp_path_factory):
    """The example site on ``pythons["site"]``, serving HTTP."""
    backend, pythons = cross
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('cross') / 'site.sqlite3'}"
    else:
        databases = request.getfixturevalue(
            {"postgresql": "postgres", "mysql": "mysql"}[backend]
        )
        url = databases.create()
    channel = f"cross-versions-{backend}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    site = MainSite(url, redis_url, channel, python=pythons["site"]).prepare()
    site.start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def cross_sidecar(cross_site, pythons, tmp_path_factory):
    process = SidecarProcess.for_site(
        cross_site, tmp_path_factory.mktemp("sidecar"), python=pythons["sidecar"]
    )
    yield process.start()
    assert process.stop() == 0, process.log()


def test_the_site_and_the_sidecar_run_different_djangos(pythons):
    versions = {side: django_version(python) for side, python in pythons.items()}
    assert sorted(versions.values()) == ["5.2", "6.1"], versions


async def test_tokens_and_events_cross_versions(cross_site, cross_sidecar):
    admin = Browser(cross_site.url)
    admin.login("admin", PASSWORD)
    alice_page = Browser(cross_site.url)
    alice_page.login("alice", PASSWORD)

    # Tokens of the site's token view and of its command line.
    superuser = await cross_sidecar.connect(admin.token())
    alice = await cross_sidecar.connect(alice_page.token())
    bob = await cross_sidecar.connect(cross_site.token("bob"))

    # An admin change: to the superuser and to alice (view_article), not bob.
    admin.add("article", title="Across versions", body="x")
    added = await receive_event(superuser)
    assert added["action"] == "addition"
    assert added["model"] == "article"
    assert added["object"] == "Across versions"
    assert added["user"] == "admin"
    assert await receive_event(alice) == added
    await assert_no_event(bob)

    # An app event from the command line (publish()), to alice only.
    cross_site.manage(
        "wsserver_publish",
        "cross.hello",
        "--data",
        json.dumps({"n": 1, "é": [None]}),
        "--user",
        "alice",
    )
    message = await receive_event(alice)
    assert message["event"] == "cross.hello"
    assert message["data"] == {"n": 1, "é": [None]}
    await assert_no_event(superuser, 0.1)
    await assert_no_event(bob, 0.1)

    # Bob's token works too: a personal event reaches him.
    cross_site.manage("wsserver_publish", "cross.bob", "--user", "bob")
    assert (await receive_event(bob))["event"] == "cross.bob"

    for websocket in (superuser, alice, bob):
        await websocket.close()

    # A token the site did not sign is refused, and the sidecar goes on.
    forged = cross_site.token("alice", SECRET_KEY="another-site-secret-key")
    refused = await authenticate(cross_sidecar.url, forged)
    assert await closed_with(refused) == (1011, "authentication failed")
    assert cross_sidecar.process.poll() is None
