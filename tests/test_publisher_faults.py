"""The publisher's faults found in review, each on a real site: an admin
change sent twice, per-object data reaching a wider audience, a failing
audience breaking a delete, costs for models that are not listed, waits on a
hung Redis growing with the number of saves.

The site is tests/faultsite: the django-guardian test site (tickets.Ticket
with the guardian audience, tickets.Notice with the model's) plus auth.User
listed with the model's audience, faultapp (a model whose audience makes a
database error, unlisted models, a proxy of Ticket) and a second admin site
(``/admin2/``) whose ModelAdmins log changes in the other ways Django allows.
It runs on PostgreSQL (where a failed query aborts the transaction) and the
shared Redis. Each scenario runs in the site's ``manage.py shell`` (the suite
sets up another site in-process), with a listener on the site's channel, and
prints what it saw for the test to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis_users
from processes import PASSWORD, MainSite
from waiting import units

pytestmark = pytest.mark.e2e

FAULT_SITE = Path(__file__).resolve().parent / "faultsite" / "manage.py"
RESULT = "FAULTSITE-RESULT "


@pytest.fixture(scope="module")
def site(postgres, redis_url) -> MainSite:
    channel = f"publisher-faults-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    listener = redis_users.shared.url_for("sidecar", redis_url, channel)
    return MainSite(
        postgres.create(),
        redis_url,
        channel,
        manage_py=FAULT_SITE,
        FAULTSITE_LISTEN_URL=listener,
        FAULTSITE_PASSWORD=PASSWORD,
    ).prepare()


PRELUDE = """
import json, os, time
import redis
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.test.utils import setup_test_environment
from tickets.models import Notice, Ticket

setup_test_environment()  # the test client's host
UNIT = float(os.environ.get("WSSERVER_TEST_TIME_UNIT", "1"))


class Bus:
    '''The site's channel, as a sidecar reads it: [audience or None, event].'''

    def __init__(self):
        # Kept: a client collected closes its pool, the pubsub's connection too.
        self.client = redis.Redis.from_url(os.environ["FAULTSITE_LISTEN_URL"])
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(os.environ["WSSERVER_CHANNEL"])
        # Subscribed once confirmed (not when subscribe() returns).
        deadline = time.monotonic() + 10 * UNIT
        while (message := self.pubsub.get_message(timeout=0.1)) is None:
            assert time.monotonic() < deadline, "not subscribed"
        assert message["type"] == "subscribe", message

    def messages(self, model=None, action=None):
        '''What came since the last call (published before the caller's
        publish() returned: a short quiet time is enough).'''
        out = []
        deadline = time.monotonic() + 0.2 * UNIT
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.05)
            if message is None:
                continue
            deadline = time.monotonic() + 0.2 * UNIT
            data = message["data"].decode()
            if data.startswith("@"):
                audience, _, event = data[1:].partition("\\n")
                out.append([json.loads(audience), json.loads(event)])
            else:
                out.append([None, json.loads(data)])
        return [
            [audience, event]
            for audience, event in out
            if (model is None or event.get("model") == model)
            and (action is None or event.get("action") == action)
        ]


def admin_client():
    client = Client()
    assert client.login(username="admin", password=os.environ["FAULTSITE_PASSWORD"])
    bus.messages()  # the login's save of the (listed) user
    return client


bus = Bus()
alice = User.objects.get(username="alice")
only_alice = {"users": [str(alice.pk)]}
"""


def scenario(site: MainSite, code: str):
    """Run ``code`` after PRELUDE in the site's shell; return its ``result``."""
    code = PRELUDE + textwrap.dedent(code) + f"\nprint({RESULT!r} + json.dumps(result))"
    completed = subprocess.run(
        [sys.executable, str(FAULT_SITE), "shell", "-c", code],
        env=site.env,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    [line] = [line for line in completed.stdout.splitlines() if line.startswith(RESULT)]
    return json.loads(line.removeprefix(RESULT))


# An admin change of a listed model is sent once


def test_a_deletion_logged_with_log_action_is_sent_once(site):
    """A ModelAdmin overriding log_deletion() (Django 5.2 still calls it) logs
    with LogEntry.objects.log_action(), outside log_actions(): the deletion
    of a model listed with None was sent by the LogEntry and by the model
    signal."""
    result = scenario(
        site,
        """
        client = admin_client()
        notice = Notice.objects.create(text="legacy")
        bus.messages()
        response = client.post(
            f"/admin2/tickets/notice/{notice.pk}/delete/", {"post": "yes"}
        )
        result = [response.status_code, bus.messages("notice", "deletion")]
        """,
    )
    status, deletions = result
    assert status == 302
    assert len(deletions) == 1, deletions
    [[audience, event]] = deletions
    assert audience is None  # an admin event
    assert event["object"] == "legacy"


def test_an_action_logging_with_logentry_create_is_sent_once(site):
    """An admin action (in changelist_view) that saves and logs with
    LogEntry.objects.create()."""
    result = scenario(
        site,
        """
        client = admin_client()
        notice = Notice.objects.create(text="action")
        bus.messages()
        response = client.post(
            "/admin2/tickets/notice/",
            {"action": "mark_reviewed", "_selected_action": [notice.pk], "index": "0"},
        )
        result = [response.status_code, bus.messages("notice", "change")]
        """,
    )
    status, changes = result
    assert status == 302
    assert len(changes) == 1, changes
    assert changes[0][1]["message"] == "Reviewed."  # the admin's, from its LogEntry


def test_a_custom_admin_view_is_sent_once(site):
    """A ModelAdmin's own view (get_urls and admin_site.admin_view, as Django
    documents) that saves and calls log_change(): not one of the three views
    the publisher wrapped, so it had no admin scope (and autocommit sends the
    save's event before the LogEntry exists)."""
    result = scenario(
        site,
        """
        client = admin_client()
        notice = Notice.objects.create(text="custom")
        bus.messages()
        response = client.post(f"/admin2/tickets/notice/{notice.pk}/approve/")
        result = [response.status_code, bus.messages("notice", "change")]
        """,
    )
    status, changes = result
    assert status == 200
    assert len(changes) == 1, changes
    assert changes[0][1]["message"] == "Approved."


def test_a_custom_admin_view_of_a_callable_listed_model_is_sent_once(site):
    result = scenario(
        site,
        """
        client = admin_client()
        ticket = Ticket.objects.create(title="t", assignee=alice)
        bus.messages()
        response = client.post(f"/admin2/tickets/ticket/{ticket.pk}/approve/")
        result = [response.status_code, bus.messages("ticket"), only_alice]
        """,
    )
    status, events, only_alice = result
    assert status == 200
    assert len(events) == 1, events
    [[audience, event]] = events
    assert audience == only_alice
    assert (event["action"], event["message"]) == ("change", "Approved.")


def test_the_user_admins_password_change_is_sent_once(site):
    """Django's own UserAdmin.user_change_password saves and calls
    log_change() outside changeform_view: with auth.User listed, the change
    was sent twice."""
    result = scenario(
        site,
        """
        client = admin_client()
        bob = User.objects.get(username="bob")
        response = client.post(
            f"/admin/auth/user/{bob.pk}/password/",
            {
                "password1": "N3w-pass-word!x",
                "password2": "N3w-pass-word!x",
                "usable_password": "true",
                "set-password": "1",
            },
        )
        result = [response.status_code, bus.messages("user", "change")]
        """,
    )
    status, changes = result
    assert status == 302
    assert [event["object"] for _, event in changes] == ["bob"], changes


# Per-object data stays with the object's audience


def test_the_guardian_audience_of_a_proxy_instance(site):
    """audiences.guardian() asked for view_<proxy>, while django-guardian
    stores the concrete model's permission: a saved proxy reached no one."""
    result = scenario(
        site,
        """
        from faultapp.models import TicketProxy
        from guardian.shortcuts import assign_perm

        ticket = Ticket.objects.create(title="proxied")
        assign_perm("tickets.view_ticket", alice, ticket)
        bus.messages()
        proxy = TicketProxy.objects.get(pk=ticket.pk)
        proxy.title = "proxied, changed"
        proxy.save()
        result = [bus.messages("ticket"), only_alice]
        """,
    )
    events, only_alice = result
    assert [audience for audience, _ in events] == [only_alice], events
    assert events[0][1]["object"] == "proxied, changed"


def test_an_inline_of_a_per_object_model_stays_out_of_the_parents_event(site):
    """A ticket (guardian: alice only) edited as an inline of a group's admin
    page: the group's LogEntry, routed to whoever may view or change groups,
    carried the ticket's new str() in its change message."""
    result = scenario(
        site,
        """
        client = admin_client()
        group = Group.objects.create(name="projects-x")
        ticket = Ticket.objects.create(title="Secret plan")
        Ticket.objects.filter(pk=ticket.pk).update(team=group)  # no signal
        from guardian.shortcuts import assign_perm

        assign_perm("tickets.view_ticket", alice, ticket)
        bus.messages()
        response = client.post(
            f"/admin2/auth/group/{group.pk}/change/",
            {
                "name": "projects-x",
                "ticket_set-TOTAL_FORMS": "1",
                "ticket_set-INITIAL_FORMS": "1",
                "ticket_set-MIN_NUM_FORMS": "0",
                "ticket_set-MAX_NUM_FORMS": "1000",
                "ticket_set-0-id": str(ticket.pk),
                "ticket_set-0-team": str(group.pk),
                "ticket_set-0-title": "Secret plan: layoffs",
                "_save": "Save",
            },
        )
        result = [response.status_code, bus.messages()]
        """,
    )
    status, messages = result
    assert status == 302
    # Admin events: to whoever may view or change groups.
    wide = [event for audience, event in messages if audience is None]
    assert [event["model"] for event in wide] == ["group"], messages
    assert "layoffs" not in json.dumps(wide), wide
    # The ticket's change goes to its own viewers, from the model signal.
    addressed = [event for audience, event in messages if audience is not None]
    assert [event["object"] for event in addressed] == ["Secret plan: layoffs"]


# A failing audience is logged, and the delete goes on


def test_an_audience_with_a_database_error_does_not_break_the_delete(site):
    """The callable runs in pre_delete, inside the delete's transaction: on
    PostgreSQL its failed query aborted that transaction (the exception
    logged and swallowed), and the DELETE then failed."""
    result = scenario(
        site,
        """
        import logging
        from faultapp.models import Doc

        class Records(logging.Handler):
            def __init__(self):
                super().__init__()
                self.messages = []

            def emit(self, record):
                self.messages.append(record.getMessage())

        records = Records()
        logging.getLogger("wsserver.publisher").addHandler(records)
        doc = Doc.objects.create(title="d")  # addition: resolved after commit
        try:
            doc.delete()
            raised = None
        except Exception as exc:
            raised = repr(exc)
        result = [
            raised,
            Doc.objects.filter(pk=doc.pk).exists(),
            records.messages,
            bus.messages("doc"),
        ]
        """,
    )
    raised, still_there, logged, events = result
    assert raised is None
    assert not still_there
    failures = [message for message in logged if "audience of faultapp.Doc" in message]
    assert len(failures) == 2, logged  # the addition's and the deletion's
    assert events == []  # never to a wider audience


# Models that are not listed keep Django's fast paths


def test_unlisted_models_keep_djangos_fast_delete(site):
    """pre_delete and post_delete receivers for every sender made
    Collector.can_fast_delete() false for every model of the site: a cascade
    loaded every related row (and a QuerySet.delete() selected first)."""
    result = scenario(
        site,
        """
        from django.db import connection
        from django.test.utils import CaptureQueriesContext
        from faultapp.models import Blob, Item

        blob = Blob.objects.create(name="b")
        Item.objects.bulk_create([Item(blob=blob) for _ in range(50)])
        with CaptureQueriesContext(connection) as queries:
            Blob.objects.filter(pk=blob.pk).delete()
        result = [
            [query["sql"] for query in queries],
            Item.objects.filter(blob_id=blob.pk).count(),
        ]
        """,
    )
    queries, items_left = result
    assert items_left == 0
    selects = [
        sql for sql in queries if sql.startswith("SELECT") and "faultapp_item" in sql
    ]
    assert not selects, queries


# A hung Redis costs one timeout, not one per save


def test_saves_on_a_hung_redis_wait_once(site):
    """Each save of a listed model registers its own on_commit, each its own
    Redis round trip: a Redis that accepts and never answers held the request
    for a timeout per save. After a failure, the publisher does not try again
    for WSSERVER_PUBLISH_TIMEOUT (the events are logged as not sent)."""
    saves = 6
    result = scenario(
        site,
        f"""
        import logging
        import socket
        import threading
        from django.test import override_settings
        from wsserver.publisher.publishing import reset_client

        class Records(logging.Handler):
            def __init__(self):
                super().__init__()
                self.messages = []

            def emit(self, record):
                self.messages.append(record.getMessage())

        hung = socket.socket()  # accepts, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(100)
        accepted = []

        def accept():
            while True:
                try:
                    accepted.append(hung.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        timeout = 0.5 * UNIT
        records = Records()
        logging.getLogger("wsserver.publisher").addHandler(records)
        with override_settings(
            WSSERVER_REDIS_URL=f"redis://127.0.0.1:{{hung.getsockname()[1]}}/0",
            WSSERVER_PUBLISH_TIMEOUT=timeout,
        ):
            reset_client()
            start = time.monotonic()
            with transaction.atomic():
                for i in range({saves}):
                    Notice.objects.create(text=f"n{{i}}")
            elapsed = time.monotonic() - start
        result = [elapsed, timeout, records.messages]
        """,
    )
    elapsed, timeout, logged = result
    assert len(logged) == saves, logged  # each event is logged as not sent
    tried = [message for message in logged if "not tried" not in message]
    assert len(tried) == 1, logged
    assert elapsed < saves * timeout / 2, (elapsed, logged)


# Documented (not a fix): where a site removes guardian's permissions


def test_guardian_cleanup_belongs_in_post_delete(site):
    """django-guardian leaves object permissions behind when the object is
    deleted; a site that removes them in pre_delete, with its receiver
    connected before the publisher's, empties the deletion's audience: nobody
    is told (never a wider audience). In post_delete (or on_commit), after
    the publisher computed the audience, the viewers are told."""
    result = scenario(
        site,
        """
        from django.contrib.contenttypes.models import ContentType
        from django.db.models import Q
        from django.db.models.signals import post_delete, pre_delete
        from guardian.models import GroupObjectPermission, UserObjectPermission
        from wsserver.publisher import changes

        def cleanup(sender, instance, **kwargs):
            of_it = Q(
                content_type=ContentType.objects.get_for_model(instance),
                object_pk=str(instance.pk),
            )
            UserObjectPermission.objects.filter(of_it).delete()
            GroupObjectPermission.objects.filter(of_it).delete()

        def delete_one(title):
            ticket = Ticket.objects.create(title=title, assignee=alice)
            bus.messages()
            ticket.delete()
            return [
                bus.messages("ticket", "deletion"),
                UserObjectPermission.objects.filter(object_pk=str(ticket.pk)).count(),
            ]

        # As if connected by a site's app listed before wsserver.publisher.
        pre_delete.connect(cleanup, sender=Ticket, dispatch_uid="site.cleanup")
        changes.connect()  # the publisher's receivers after it
        too_early = delete_one("pre")
        pre_delete.disconnect(sender=Ticket, dispatch_uid="site.cleanup")
        post_delete.connect(cleanup, sender=Ticket, dispatch_uid="site.cleanup")
        after = delete_one("post")
        result = [too_early, after, only_alice]
        """,
    )
    too_early, after, only_alice = result
    assert too_early == [[], 0]
    deletions, permissions_left = after
    assert permissions_left == 0
    assert [[audience, event["object"]] for audience, event in deletions] == [
        [only_alice, "post"]
    ]
