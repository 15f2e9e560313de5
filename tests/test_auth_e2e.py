"""Authentication end to end when tokens die with the email, on PostgreSQL.

The example site and a sidecar both run with SESAME_INVALIDATE_ON_EMAIL_CHANGE:
the site through a settings module that extends the example's (it has no
variable for it), the sidecar through its environment. The email column is
made nullable, as custom user models may have it.
"""

from __future__ import annotations

import asyncio
import json
import os

import psycopg
import pytest
from clients import authenticate, closed_with, receive_event
from processes import SidecarProcess
from waiting import eventually

pytestmark = pytest.mark.e2e

EMAIL_REVOKES = {
    "SESAME_INVALIDATE_ON_EMAIL_CHANGE": "true",
    # Tokens made at the start of a test are still valid at its end.
    "SESAME_MAX_AGE": "300",
}
SETTINGS = """\
from exampleproject.settings import *  # noqa: F403

SESAME_INVALIDATE_ON_EMAIL_CHANGE = True
"""
BATCH = 40

MAKE_USERS = f"""\
import json
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.db import connection
from wsserver.publisher.tokens import token_for

old = User._meta.get_field("email")
new = old.clone()
new.set_attributes_from_name("email")
new.null = True
with connection.schema_editor() as editor:
    editor.alter_field(User, old, new)
password = make_password("batch")
users = [
    User.objects.create(username=name, email=f"{{name}}@example.com", password=password)
    for name in ["first", "nemo", *(f"batch-{{n}}" for n in range({BATCH}))]
]
print(json.dumps({{user.username: token_for(user) for user in users}}))
"""


@pytest.fixture(scope="module")
def site_env(tmp_path_factory):
    settings = tmp_path_factory.mktemp("settings")
    (settings / "email_revokes_settings.py").write_text(SETTINGS)
    path = os.pathsep.join(filter(None, [str(settings), os.environ.get("PYTHONPATH")]))
    return {
        "DJANGO_SETTINGS_MODULE": "email_revokes_settings",
        "PYTHONPATH": path,
        **EMAIL_REVOKES,
    }


@pytest.fixture(scope="module")
def site(postgres_site):
    return postgres_site


@pytest.fixture(scope="module")
def sidecar(site, tmp_path_factory):
    # One database thread: tokens that arrive while it is busy are batched.
    process = SidecarProcess.for_site(
        site, tmp_path_factory.mktemp("sidecar"), WS_DB_THREADS="1", **EMAIL_REVOKES
    ).start()
    yield process
    assert process.stop() == 0


def authentication_queries(sidecar: SidecarProcess) -> int:
    return sidecar._metric("wsserver_authentication_queries_total")


async def test_a_token_whose_check_raises_fails_alone_in_its_batch(site, sidecar):
    tokens = json.loads(site.manage("shell", "--verbosity", "0", "-c", MAKE_USERS))
    # Tokens die with the email; nemo's is now NULL: django-sesame raises.
    site.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "User.objects.filter(username='nemo').update(email=None)\n",
    )
    queries = authentication_queries(sidecar)
    database = site.env["DATABASE_URL"]
    with psycopg.connect(database) as holder, psycopg.connect(database) as watcher:
        # The sidecar's one thread waits for this lock with the first token;
        # the others queue behind it, to be checked in one batch.
        holder.execute("LOCK TABLE auth_user IN ACCESS EXCLUSIVE MODE")
        first = await authenticate(sidecar.url, tokens.pop("first"))
        await eventually(
            lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0],
            10,
            "the first token queried",
        )
        names = list(tokens)  # nemo, then the batch
        websockets = await asyncio.gather(
            *[authenticate(sidecar.url, tokens[name]) for name in names]
        )
        # Every token read and queued behind the first before the lock goes.
        await eventually(
            lambda: sidecar._metric("wsserver_authentications_queued") == len(names),
            10,
            "the other tokens queued",
        )
        holder.rollback()  # releases the lock
    nemo = websockets[names.index("nemo")]
    assert await closed_with(nemo) == (1011, "authentication failed")
    await sidecar.until_connections(1 + BATCH)
    assert first.close_code is None
    assert all(ws.close_code is None for ws in websockets if ws is not nemo)
    # The first token alone, then every other one in one query.
    assert authentication_queries(sidecar) - queries == 2
    log = sidecar.log()
    assert "Token refused for user" in log and "TypeError" in log
    assert tokens["nemo"] not in log
    for websocket in [first, *websockets]:
        await websocket.close()


async def test_an_email_change_revokes_connections(site, sidecar, publish):
    alice = await sidecar.connect(site.token("alice"))
    admin = await sidecar.connect(site.token("admin"))
    site.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "user = User.objects.get(username='alice')\n"
        "user.email = 'alice@elsewhere.example'\n"
        "user.save()\n"
        # Saved, email unchanged: tokens live on, and so does the connection.
        "user = User.objects.get(username='admin')\n"
        "user.first_name = 'Ada'\n"
        "user.save()\n",
    )
    assert await closed_with(alice, timeout=2) == (1008, "access revoked")
    # Control messages and events are handled in order: once this event
    # arrives, the admin's recheck is done.
    publish({"content_type_id": 1, "to": "admin"})
    assert (await receive_event(admin))["to"] == "admin"
    assert admin.close_code is None
    await admin.close()
