"""WSSERVER_MODELS end to end: model changes from anywhere, to the right people.

The django-guardian test site (tests/guardiansite) lists ``tickets.Ticket``
with the guardian audience (its assignee and team get the object's view
permission) and ``tickets.Notice`` with the model's audience (``dave`` may
view notices). Changes are made in ``manage.py shell`` processes, through a
view of the site and through its admin over HTTP; events go through a real
Redis and a real sidecar on the same PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
import redis
from browser import Browser
from clients import assert_no_event, receive_event
from processes import GUARDIAN_SITE, LONG_LIVED, PASSWORD, MainSite, SidecarProcess

from wsserver.audience import encode_audience
from wsserver.wire import PUBLISH_WITH_HISTORY, history_key

pytestmark = pytest.mark.e2e

USERS = ["admin", "alice", "bob", "carol", "dave"]


@pytest.fixture(scope="module")
def site(postgres, redis_url) -> MainSite:
    channel = f"model-changes-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return MainSite(
        postgres.create(), redis_url, channel, manage_py=GUARDIAN_SITE
    ).prepare()


@pytest.fixture(scope="module")
def ids(site) -> dict:
    """Users' and groups' pks (from seed_demo), and the content types'."""
    printed = site.manage(
        "shell",
        "-c",
        "import json; from django.contrib.contenttypes.models import ContentType;"
        "print(json.dumps({m: ContentType.objects.get(app_label='tickets', "
        "model=m).pk for m in ['ticket', 'notice']}))",
    )
    return {
        **json.loads(site.seeded),
        "content_types": json.loads(printed.strip().splitlines()[-1]),
    }


@pytest.fixture(scope="module")
def sidecar(site, tmp_path_factory):
    process = SidecarProcess.for_site(
        site, tmp_path_factory.mktemp("sidecar"), **LONG_LIVED
    )
    yield process.start()
    assert process.stop() == 0


@pytest.fixture(scope="module")
def tokens(site) -> dict[str, str]:
    return {user: site.token(user) for user in USERS}


@pytest.fixture
async def clients(sidecar, tokens):
    """A connection per test user."""
    connections = {user: await sidecar.connect(tokens[user]) for user in USERS}
    yield connections
    for websocket in connections.values():
        await websocket.close()


@pytest.fixture(scope="module")
def admin_browser(live_site) -> Browser:
    browser = Browser(live_site.url)
    browser.login("admin", PASSWORD)
    return browser


PRELUDE = """
from django.contrib.auth.models import Group, User
from django.db import transaction
from tickets.models import Notice, Ticket
alice = User.objects.get(username="alice")
support = Group.objects.get(name="support")
"""


def shell(site: MainSite, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run code after PRELUDE in the site's ``manage.py shell``, a process of
    its own, as the site's Celery tasks or commands would."""
    code = PRELUDE + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, str(GUARDIAN_SITE), "shell", "-c", code],
        env={**site.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


async def receive_all(websocket, count: int) -> list[dict]:
    return [await receive_event(websocket) for _ in range(count)]


def strip(event: dict) -> dict:
    """An event without what changes every time."""
    assert event.pop("id")
    assert event.pop("timestamp")
    return event


async def test_saves_and_deletes_outside_the_admin_reach_the_models_audience(
    site, ids, clients
):
    shell(
        site,
        """
        notice = Notice.objects.create(text="Outside")
        notice.text = "Outside, changed"
        notice.save()
        pk = notice.pk
        notice.delete()
        print(pk)
        """,
    )
    events = await receive_all(clients["dave"], 3)
    pk = events[0]["object_id"]
    common = {
        "model": "notice",
        "message": "",
        "user": None,
        "content_type_id": ids["content_types"]["notice"],
        "object_id": pk,
    }
    assert [strip(dict(event)) for event in events] == [
        {**common, "object": "Outside", "action": "addition"},
        {**common, "object": "Outside, changed", "action": "change"},
        {**common, "object": "Outside, changed", "action": "deletion"},
    ]
    # Key order as the admin's events.
    assert list(events[0]) == [
        "id",
        *["model", "object", "message", "timestamp", "user"],
        *["content_type_id", "object_id", "action"],
    ]
    # Superusers receive model audiences, like admin events.
    assert await receive_all(clients["admin"], 3) == events
    for user in ["alice", "bob", "carol"]:
        await assert_no_event(clients[user])


async def test_a_view_of_the_site_names_its_user(ids, clients, admin_browser):
    status, body = admin_browser.request("/notices/new/", {"text": "From a view"})
    assert status == 200, body[:500]
    event = await receive_event(clients["dave"])
    assert event["object"] == "From a view"
    assert event["object_id"] == body
    assert event["action"] == "addition"
    assert event["user"] == "admin"  # CurrentUserMiddleware
    assert event["message"] == ""  # not an admin change


async def test_the_guardian_audience_is_the_objects_viewers(site, ids, clients):
    shell(
        site,
        """
        # The site gives the permissions when the ticket is saved: in the
        # same transaction, so the addition reaches them too.
        with transaction.atomic():
            shared = Ticket.objects.create(
                title="Shared", assignee=alice, team=support
            )
        personal = Ticket.objects.create(title="Personal")
        personal.assignee = alice  # the view permission comes with this save
        personal.save()
        shared.title = "Shared, changed"
        shared.save()
        shared.delete()
        personal.delete()
        """,
    )
    common = {
        "model": "ticket",
        "message": "",
        "user": None,
        "content_type_id": ids["content_types"]["ticket"],
    }
    to_alice = [strip(event) for event in await receive_all(clients["alice"], 5)]
    shared_pk, personal_pk = to_alice[0]["object_id"], to_alice[1]["object_id"]
    assert to_alice == [
        {**common, "object": "Shared", "object_id": shared_pk, "action": "addition"},
        # The addition, made without the permission, reached nobody.
        {**common, "object": "Personal", "object_id": personal_pk, "action": "change"},
        {
            **common,
            "object": "Shared, changed",
            "object_id": shared_pk,
            "action": "change",
        },
        {
            **common,
            "object": "Shared, changed",
            "object_id": shared_pk,
            "action": "deletion",
        },
        {
            **common,
            "object": "Personal",
            "object_id": personal_pk,
            "action": "deletion",
        },
    ]
    # carol: through the support group, for the shared ticket only.
    to_carol = [strip(event) for event in await receive_all(clients["carol"], 3)]
    assert to_carol == [to_alice[0], to_alice[2], to_alice[3]]
    # Not a superuser, nor a user who may view every notice, nor bob.
    for user in ["admin", "bob", "dave", "carol", "alice"]:
        await assert_no_event(clients[user])


async def test_a_rolled_back_save_publishes_nothing(site, clients):
    shell(
        site,
        """
        try:
            with transaction.atomic():
                Notice.objects.create(text="Ghost")
                Ticket.objects.create(title="Ghost", assignee=alice)
                Notice.objects.get(text="Ghost").delete()
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        Notice.objects.create(text="Real")
        Ticket.objects.create(title="Real", assignee=alice)
        """,
    )
    assert (await receive_event(clients["dave"]))["object"] == "Real"
    assert (await receive_event(clients["alice"]))["object"] == "Real"
    await assert_no_event(clients["dave"])
    await assert_no_event(clients["alice"])


def sentinel(bus, site, ids, user: str, name: str) -> None:
    """An app event for one user, published after the change under test: it
    arrives after any duplicate the change would have produced."""
    channel = site.env["WSSERVER_CHANNEL"]
    audience = encode_audience(users=[str(ids["users"][user])])
    script = bus.register_script(PUBLISH_WITH_HISTORY)
    event = json.dumps({"event": "test.sentinel", "data": name})
    with bus.pipeline(transaction=False) as pipeline:
        script(
            keys=[history_key(channel)],
            args=[event, 10_000, channel, "", audience],
            client=pipeline,
        )
        pipeline.execute()


async def once_then_sentinel(websocket, bus, site, ids, user, count=1) -> list[dict]:
    """The next ``count`` events, then the sentinel: no duplicate between."""
    events = await receive_all(websocket, count)
    name = uuid.uuid4().hex
    sentinel(bus, site, ids, user, name)
    next_message = await receive_event(websocket)
    assert next_message.get("data") == name, (events, next_message)
    return events


DELETE_SELECTED = [("action", "delete_selected"), ("post", "yes"), ("index", "0")]


def admin_post(browser: Browser, path: str, data) -> None:
    status, body = browser.request(path, data)
    assert status == 200 and "errornote" not in body, body[:2000]


async def test_an_admin_change_of_a_listed_model_arrives_once(
    site, ids, clients, admin_browser, bus
):
    dave, admin = clients["dave"], clients["admin"]
    admin_post(admin_browser, "/admin/tickets/notice/add/", {"text": "By admin"})
    [added] = await once_then_sentinel(dave, bus, site, ids, "dave")
    assert added["action"] == "addition"
    assert added["message"] == "Added."  # the LogEntry's event
    assert added["user"] == "admin"
    pk = added["object_id"]
    assert await receive_event(admin) == added

    admin_post(
        admin_browser,
        f"/admin/tickets/notice/{pk}/change/",
        {"text": "By admin, changed", "_save": "Save"},
    )
    [changed] = await once_then_sentinel(dave, bus, site, ids, "dave")
    assert (changed["action"], changed["object"]) == ("change", "By admin, changed")
    assert "Text" in changed["message"]

    # list_editable, on the change list: the newest notice is the first row.
    status, _ = admin_browser.submit_form(
        "/admin/tickets/notice/", {"form-0-text": "Edited in the list"}
    )
    assert status == 200
    [edited] = await once_then_sentinel(dave, bus, site, ids, "dave")
    assert (edited["action"], edited["object_id"]) == ("change", pk)
    assert edited["object"] == "Edited in the list"

    admin_post(admin_browser, f"/admin/tickets/notice/{pk}/delete/", {"post": "yes"})
    [deleted] = await once_then_sentinel(dave, bus, site, ids, "dave")
    assert (deleted["action"], deleted["object_id"]) == ("deletion", pk)

    # The delete_selected action, on two notices made outside the admin.
    shell(site, "Notice.objects.create(text='A')\n")
    shell(site, "Notice.objects.create(text='B')\n")
    pks = [event["object_id"] for event in await receive_all(dave, 2)]
    admin_post(
        admin_browser,
        "/admin/tickets/notice/",
        [*DELETE_SELECTED, *[("_selected_action", pk) for pk in pks]],
    )
    deleted = await once_then_sentinel(dave, bus, site, ids, "dave", count=2)
    assert sorted(event["object_id"] for event in deleted) == sorted(pks)
    assert {event["action"] for event in deleted} == {"deletion"}
    assert {event["user"] for event in deleted} == {"admin"}


async def test_admin_changes_of_a_guardian_model_go_to_the_objects_viewers(
    site, ids, clients, admin_browser, bus
):
    alice, carol = clients["alice"], clients["carol"]
    alice_pk = str(ids["users"]["alice"])
    support_pk = str(ids["groups"]["support"])
    admin_post(
        admin_browser,
        "/admin/tickets/ticket/add/",
        {"title": "Admin ticket", "assignee": alice_pk, "team": "", "_save": "Save"},
    )
    [added] = await once_then_sentinel(alice, bus, site, ids, "alice")
    assert (added["action"], added["message"]) == ("addition", "Added.")
    pk = added["object_id"]

    admin_post(
        admin_browser,
        f"/admin/tickets/ticket/{pk}/change/",
        {
            "title": "Admin ticket, shared",
            "assignee": alice_pk,
            "team": support_pk,
            "_save": "Save",
        },
    )
    [changed] = await once_then_sentinel(alice, bus, site, ids, "alice")
    assert changed["action"] == "change" and changed["message"]
    # carol's group got the permission with this change.
    [to_carol] = await once_then_sentinel(carol, bus, site, ids, "carol")
    assert to_carol == changed

    status, _ = admin_browser.submit_form(
        "/admin/tickets/ticket/", {"form-0-title": "Edited in the list"}
    )
    assert status == 200
    [edited] = await once_then_sentinel(alice, bus, site, ids, "alice")
    assert (edited["object_id"], edited["object"]) == (pk, "Edited in the list")
    assert await once_then_sentinel(carol, bus, site, ids, "carol") == [edited]

    admin_post(admin_browser, f"/admin/tickets/ticket/{pk}/delete/", {"post": "yes"})
    [deleted] = await once_then_sentinel(alice, bus, site, ids, "alice")
    assert (deleted["action"], deleted["object_id"]) == ("deletion", pk)
    assert await once_then_sentinel(carol, bus, site, ids, "carol") == [deleted]

    shell(site, "Ticket.objects.create(title='C', assignee=alice)\n")
    [made] = await receive_all(alice, 1)
    admin_post(
        admin_browser,
        "/admin/tickets/ticket/",
        [*DELETE_SELECTED, ("_selected_action", made["object_id"])],
    )
    [deleted] = await once_then_sentinel(alice, bus, site, ids, "alice")
    assert (deleted["action"], deleted["object_id"]) == ("deletion", made["object_id"])

    # Never to those without the object's permission, superusers included.
    for user in ["admin", "bob", "dave", "carol"]:
        await assert_no_event(clients[user])


# Failures: on the bus, where the history stream shows what was published.


@pytest.fixture
def history(site, redis_url):
    """The entries the site appends to its history stream from now on."""
    client = redis.Redis.from_url(redis_url)
    key = history_key(site.env["WSSERVER_CHANNEL"])
    [(last, _)] = client.xrevrange(key, count=1) or [(b"0-0", None)]

    def new_entries() -> list[dict]:
        return [
            {name.decode(): value.decode() for name, value in fields.items()}
            for _, fields in client.xrange(key, min=b"(" + last)
        ]

    yield new_entries
    client.close()


def test_an_audience_that_fails_or_is_empty_sends_nothing(site, history):
    failing = json.dumps(
        {
            "tickets.Notice": "tickets.audiences.broken",
            "tickets.Ticket": "tickets.audiences.nobody",
        }
    )
    result = shell(
        site,
        "Notice.objects.create(text='Unsendable').delete()\n"
        + "Ticket.objects.create(title='Nobody', assignee=alice).delete()\n"
        + "print('saved')\n",
        GUARDIANSITE_MODELS=failing,
    )
    assert "saved" in result.stdout  # never raised into the save
    assert "RuntimeError: no audience for Unsendable" in result.stderr
    assert "Traceback" in result.stderr
    assert history() == []


def test_a_log_entry_made_outside_the_admin_goes_to_the_callables_audience(
    site, ids, history
):
    result = shell(
        site,
        """
        from django.contrib.admin.models import CHANGE, LogEntry
        from django.contrib.contenttypes.models import ContentType
        ticket = Ticket.objects.create(title="Logged", assignee=alice)
        for object_id in [ticket.pk, 10**9]:  # the second one does not exist
            LogEntry.objects.create(
                user=User.objects.get(username="admin"),
                content_type=ContentType.objects.get_for_model(Ticket),
                object_id=str(object_id),
                object_repr="Logged",
                action_flag=CHANGE,
            )
        """,
    )
    [saved, logged] = history()
    audience = encode_audience(users=[str(ids["users"]["alice"])])
    assert saved["aud"] == logged["aud"] == audience
    assert json.loads(logged["aevent"])["user"] == "admin"
    assert json.loads(logged["aevent"])["action"] == "change"
    # The entry of an object that cannot be read is not published at all.
    assert "cannot read the object of the admin's log entry" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('{"tickets.Nope": null}', "WSSERVER_MODELS['tickets.Nope']: no such model"),
        ('{"nope": null}', "WSSERVER_MODELS['nope']: no such model"),
        (
            '{"tickets.Notice": "tickets.audiences.missing"}',
            "WSSERVER_MODELS['tickets.Notice']: cannot import the audience",
        ),
        (
            '{"tickets.Notice": 3}',
            "WSSERVER_MODELS['tickets.Notice']: the audience must be None",
        ),
        ('["tickets.Notice"]', "WSSERVER_MODELS must be a dict"),
    ],
)
def test_a_bad_setting_fails_at_startup_naming_the_entry(site, setting, message):
    result = subprocess.run(
        [sys.executable, str(GUARDIAN_SITE), "check"],
        env={**site.env, "GUARDIANSITE_MODELS": setting},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_acting_user_names_the_author_outside_a_request(site, history):
    shell(
        site,
        """
        from wsserver.publisher.changes import acting_user
        with acting_user(alice):  # e.g. in a Celery task made for alice
            Notice.objects.create(text="By a task")
        """,
    )
    [entry] = history()
    event = json.loads(entry["event"])
    assert (event["object"], event["user"]) == ("By a task", "alice")
    assert "aud" not in entry  # the model's audience: routed by content type
    assert entry["ct"] == str(event["content_type_id"])
