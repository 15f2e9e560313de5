"""publish(), the site's own events, in-process with the example site and a
real Redis (the in-process site of test_publisher), and the wsserver_publish
command, in-process and through manage.py.

Each audience kind is checked on the bytes of the bus message and on the
history's stream entry: what the sidecar reads. Last, the example site's
"Send me a notification" button, in Chromium with a real sidecar.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest
import redis
from browser import Browser
from chromium import Chromium
from processes import PASSWORD, MainSite, SidecarProcess, free_port, running
from test_publisher import setup_example_site
from waiting import units

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def django_site(tmp_path_factory, redis_url):
    setup_example_site(tmp_path_factory)
    return redis_url


class Bus:
    """The channel's messages as published (bytes), and its history."""

    def __init__(self, pubsub, client: redis.Redis, channel: str):
        self.pubsub = pubsub
        self.redis = client
        self.channel = channel

    def messages(self, wait: float = 0.5) -> list[bytes]:
        """Every message received within ``wait`` time units of the last one."""
        messages = []
        deadline = time.monotonic() + units(wait)
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None:
                messages.append(message["data"])
                deadline = time.monotonic() + units(wait)
        return messages

    def one(self) -> bytes:
        [message] = self.messages()
        return message

    def last_entry(self) -> tuple[str, dict[bytes, bytes]]:
        [(stream_id, fields)] = self.redis.xrevrange(f"{self.channel}:history", count=1)
        return stream_id.decode(), fields

    def entries(self) -> int:
        return self.redis.xlen(f"{self.channel}:history")


@pytest.fixture
def bus(django_site, channel, redis_acl_users):
    """Point the publisher at a fresh channel, as its Redis user; listen to it."""
    from django.test import override_settings

    from wsserver.publisher.publishing import reset_client

    publisher_url = redis_acl_users.url_for("publisher", django_site, channel)
    with override_settings(WSSERVER_REDIS_URL=publisher_url, WSSERVER_CHANNEL=channel):
        reset_client()
        client = redis.Redis.from_url(django_site)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        pubsub.get_message(timeout=1)  # the subscription confirmation
        yield Bus(pubsub, client, channel)
        pubsub.close()
        client.delete(f"{channel}:history")
        client.close()
    reset_client()


def user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def content_type_id(model) -> int:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.get_for_model(model).pk


def expected(bus: Bus, audience: str, event: str, data) -> bytes:
    """The bus message of an app event: its audience, then the event as
    clients receive it, the history's id first."""
    stream_id, fields = bus.last_entry()
    client_json = json.dumps(
        {"id": stream_id, "event": event, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # The stream entry: the event without id, and its audience beside it.
    assert fields == {
        b"aevent": json.dumps(
            {"event": event, "data": data}, separators=(",", ":"), ensure_ascii=False
        ).encode(),
        b"aud": audience.encode(),
    }
    return b"@" + audience.encode() + b"\n" + client_json.encode()


# Each audience kind


def test_users_by_instance_and_pk(bus):
    from wsserver.publisher import publish

    alice, bob = user("alice"), user("bob")
    publish("export.ready", {"url": "/exports/42.csv"}, users=[alice, bob.pk])
    audience = json.dumps({"users": sorted([str(alice.pk), str(bob.pk)])})
    audience = audience.replace(" ", "")
    assert bus.one() == expected(
        bus, audience, "export.ready", {"url": "/exports/42.csv"}
    )


def test_users_as_primary_keys_in_any_form_are_the_same_user(bus):
    from wsserver.publisher import publish

    alice = user("alice")
    publish("n", None, users=[alice.pk, str(alice.pk), alice])
    assert bus.one() == expected(bus, f'{{"users":["{alice.pk}"]}}', "n", None)


def test_groups_by_instance_name_and_pk(bus):
    from django.contrib.auth.models import Group

    from wsserver.publisher import publish

    editors = Group.objects.get(name="product-editors")
    support, _ = Group.objects.get_or_create(name="support")
    publish("ticket.assigned", {"ticket": 7}, groups=[editors, "support", editors.pk])
    first, second = sorted([editors.pk, support.pk])
    audience = f'{{"groups":[{first},{second}]}}'
    assert bus.one() == expected(bus, audience, "ticket.assigned", {"ticket": 7})

    publish("ticket.assigned", {"ticket": 8}, groups=["product-editors"])
    audience = f'{{"groups":[{editors.pk}]}}'
    assert bus.one() == expected(bus, audience, "ticket.assigned", {"ticket": 8})


def test_permissions(bus):
    from wsserver.publisher import publish

    publish(
        "order.paid",
        {"order": 42},
        permissions=["catalog.view_product", "catalog.change_product"],
    )
    audience = '{"permissions":["catalog.change_product","catalog.view_product"]}'
    assert bus.one() == expected(bus, audience, "order.paid", {"order": 42})


def test_models_by_class_instance_and_string(bus):
    from catalog.models import Article, Product, Supplier

    from wsserver.publisher import publish

    product = Product.objects.create(name="Lamp", price=3)
    publish("catalog.changed", None, models=[Article, product, "catalog.supplier"])
    ids = sorted(content_type_id(model) for model in [Article, Product, Supplier])
    audience = '{"content_types":[' + ",".join(map(str, ids)) + "]}"
    assert bus.one() == expected(bus, audience, "catalog.changed", None)

    # "app_label.model" as Django spells it, whatever the case.
    publish("catalog.changed", None, models=["catalog.Article"])
    audience = f'{{"content_types":[{content_type_id(Article)}]}}'
    assert bus.one() == expected(bus, audience, "catalog.changed", None)


def test_the_union_of_every_kind(bus):
    from catalog.models import Article
    from django.contrib.auth.models import Group

    from wsserver.publisher import publish

    alice = user("alice")
    editors = Group.objects.get(name="product-editors")
    publish(
        "everything",
        [1, "two", {"three": 3.5}],
        users=[alice],
        groups=["product-editors"],
        permissions=["catalog.view_article"],
        models=[Article],
    )
    audience = (
        f'{{"users":["{alice.pk}"],"groups":[{editors.pk}],'
        f'"permissions":["catalog.view_article"],'
        f'"content_types":[{content_type_id(Article)}]}}'
    )
    assert bus.one() == expected(
        bus, audience, "everything", [1, "two", {"three": 3.5}]
    )


def test_the_id_comes_first_and_is_the_stream_entry(bus):
    from wsserver.publisher import publish

    publish("first", {"n": 1}, users=[user("bob")])
    publish("second", {"n": 2}, users=[user("bob")])
    first, second = bus.messages()
    events = [json.loads(message.partition(b"\n")[2]) for message in (first, second)]
    assert [list(event) for event in events] == [["id", "event", "data"]] * 2
    stream = bus.redis.xrange(f"{bus.channel}:history")
    assert [event["id"] for event in events] == [id.decode() for id, _ in stream]
    assert [event["event"] for event in events] == ["first", "second"]


def test_data_is_sent_as_it_was_at_the_call_in_utf8(bus):
    from django.db import transaction

    from wsserver.publisher import publish

    data = {"text": "Déjà vu ✓", "items": [1]}
    with transaction.atomic():
        publish("unicode", data, users=[user("bob")])
        data["items"].append(2)  # after the call: not sent
    message = bus.one()
    assert "Déjà vu ✓".encode() in message
    assert json.loads(message.partition(b"\n")[2])["data"] == {
        "text": "Déjà vu ✓",
        "items": [1],
    }


# Transactions


def test_a_rolled_back_transaction_publishes_nothing(bus):
    from django.db import transaction

    from wsserver.publisher import publish

    class Failure(Exception):
        pass

    with pytest.raises(Failure), transaction.atomic():
        publish("never", None, users=[user("alice")])
        raise Failure
    assert bus.messages() == []
    assert bus.entries() == 0

    # A savepoint rolled back inside a committed transaction: its event is
    # dropped, the others are sent.
    with transaction.atomic():
        publish("kept", None, users=[user("alice")])
        with pytest.raises(Failure), transaction.atomic():
            publish("dropped", None, users=[user("alice")])
            raise Failure
    [message] = bus.messages()
    assert json.loads(message.partition(b"\n")[2])["event"] == "kept"


def test_a_committed_transaction_publishes_once_after_the_commit(bus):
    from catalog.models import Article
    from django.db import transaction

    from wsserver.publisher import publish

    with transaction.atomic():
        article = Article.objects.create(title="Draft")
        publish("article.drafted", {"id": article.pk}, users=[user("alice")])
        assert bus.messages(wait=0.3) == []
        assert bus.entries() == 0
    [message] = bus.messages()
    assert json.loads(message.partition(b"\n")[2])["data"] == {"id": article.pk}
    assert bus.entries() == 1


def test_outside_a_transaction_it_is_sent_at_once(bus):
    from wsserver.publisher import publish

    publish("now", None, users=[user("alice")])
    # Sent before publish() returned.
    assert bus.entries() == 1


# Bad arguments: at the call, naming the argument


def bad_calls():
    from django.contrib.auth.models import AnonymousUser, Group

    return [
        ((123,), {"users": [1]}, TypeError, "event"),
        (("",), {"users": [1]}, ValueError, "event"),
        (("x",), {}, ValueError, "no audience"),
        (("x",), {"users": [], "groups": ()}, ValueError, "no audience"),
        (("x",), {"users": "bob"}, TypeError, "users"),
        (("x",), {"users": b"bob"}, TypeError, "users"),
        (("x",), {"users": 7}, TypeError, "users"),
        (("x",), {"users": [AnonymousUser()]}, ValueError, "users"),
        (("x",), {"users": [Group(pk=1)]}, TypeError, "users"),
        (("x",), {"users": [None]}, TypeError, "users"),
        (("x",), {"users": [True]}, TypeError, "users"),
        (("x",), {"users": [1.5]}, TypeError, "users"),
        (("x",), {"users": ["not-an-int-pk"]}, ValueError, "users"),
        (("x",), {"groups": "support"}, TypeError, "groups"),
        (("x",), {"groups": ["no-such-group"]}, ValueError, "no-such-group"),
        (("x",), {"groups": [Group(name="unsaved")]}, ValueError, "groups"),
        (("x",), {"groups": [-1]}, TypeError, "groups"),
        (("x",), {"groups": [2**64]}, TypeError, "groups"),
        (("x",), {"groups": [1.0]}, TypeError, "groups"),
        (("x",), {"permissions": "catalog.view_article"}, TypeError, "permissions"),
        (("x",), {"permissions": ["view_article"]}, ValueError, "permissions"),
        (("x",), {"permissions": ["catalog. view"]}, ValueError, "permissions"),
        (("x",), {"permissions": [42]}, ValueError, "permissions"),
        (("x",), {"models": "catalog.article"}, TypeError, "models"),
        (("x",), {"models": ["catalog.nothing"]}, ValueError, "models"),
        (("x",), {"models": ["nothing"]}, ValueError, "models"),
        (("x",), {"models": [42]}, TypeError, "models"),
        (("x", {1, 2}), {"users": [1]}, TypeError, "data"),
        (("x", object()), {"users": [1]}, TypeError, "data"),
        (("x", float("nan")), {"users": [1]}, ValueError, "data"),
        (("x", {(1, 2): 3}), {"users": [1]}, TypeError, "data"),
    ]


def test_bad_arguments_raise_at_the_call_naming_the_argument(bus):
    from wsserver.publisher import publish

    calls = bad_calls()
    for args, kwargs, error, named in calls:
        with pytest.raises(error) as raised:
            publish(*args, **kwargs)
        assert named in str(raised.value), (args, kwargs, raised.value)
    circular = []
    circular.append(circular)
    with pytest.raises(ValueError, match="data"):
        publish("x", circular, users=[1])
    assert bus.messages(wait=0.3) == []


def test_an_event_larger_than_the_maximum_is_refused(bus):
    from django.test import override_settings

    from wsserver.publisher import publish

    overhead = len('{"event":"big","data":""}')
    with override_settings(WSSERVER_MAX_EVENT_SIZE=1000):
        publish("big", "x" * (1000 - overhead), users=[1])
        with pytest.raises(ValueError, match="WSSERVER_MAX_EVENT_SIZE") as raised:
            publish("big", "x" * (1001 - overhead), users=[1])
        assert "1001 bytes" in str(raised.value)
        # Bytes, not characters: "é" is two in UTF-8.
        with pytest.raises(ValueError, match="WSSERVER_MAX_EVENT_SIZE"):
            publish("big", "é" * 500, users=[1])
    [message] = bus.messages()
    assert len(message.partition(b"\n")[2]) > 1000  # with its id


def test_a_huge_audience_is_refused(bus):
    from wsserver.audience import MAX_AUDIENCE_SIZE
    from wsserver.publisher import publish

    users = range(1, MAX_AUDIENCE_SIZE // 8)
    with pytest.raises(ValueError, match="audience"):
        publish("x", None, users=users)
    assert bus.messages(wait=0.3) == []


def test_redis_down_is_logged_not_raised(django_site, caplog):
    from django.db import transaction
    from django.test import override_settings

    from wsserver.publisher import publish
    from wsserver.publisher.publishing import reset_client

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(WSSERVER_REDIS_URL=nobody):
        reset_client()
        with caplog.at_level(logging.ERROR, logger="wsserver.publisher"):
            publish("lost", None, users=[user("alice")])
            with transaction.atomic():
                publish("lost", None, users=[user("alice")])
    reset_client()
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert "could not publish 1 event(s)" in record.getMessage()
        assert nobody in record.getMessage()


# Without history


def test_without_history_addressed_events_have_no_id(bus):
    from django.test import override_settings

    from wsserver.publisher import publish

    alice = user("alice")
    with override_settings(WSSERVER_HISTORY_SIZE=0):
        publish("export.ready", {"url": "/x"}, users=[alice])
    assert bus.one() == (
        f'@{{"users":["{alice.pk}"]}}\n'
        '{"event":"export.ready","data":{"url":"/x"}}'.encode()
    )
    assert bus.entries() == 0


def test_without_history_admin_events_stay_flat(bus):
    from catalog.models import Article
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.test import override_settings

    article = Article.objects.create(title="Flat")
    with override_settings(WSSERVER_HISTORY_SIZE=0):
        LogEntry.objects.log_actions(
            user("admin").pk, [article], ADDITION, change_message="Added."
        )
    event = json.loads(bus.one())
    assert "id" not in event
    assert event["content_type_id"] == content_type_id(Article)
    assert event["object"] == "Flat"
    assert bus.entries() == 0


# Admin events and the size limit


def test_an_admin_event_larger_than_the_maximum_is_logged_and_skipped(bus, caplog):
    from catalog.models import Article
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.test import override_settings

    article = Article.objects.create(title="T" * 200)
    with (
        override_settings(WSSERVER_MAX_EVENT_SIZE=300),
        caplog.at_level(logging.ERROR, logger="wsserver.publisher"),
    ):
        LogEntry.objects.log_actions(
            user("admin").pk, [article], CHANGE, change_message="Changed."
        )
    assert bus.messages(wait=0.3) == []
    [record] = caplog.records
    assert "WSSERVER_MAX_EVENT_SIZE" in record.getMessage()

    # The admin shape is unchanged otherwise: flat, "ct" beside it.
    LogEntry.objects.log_actions(
        user("admin").pk, [article], CHANGE, change_message="Changed."
    )
    event = json.loads(bus.one())
    stream_id, fields = bus.last_entry()
    assert event.pop("id") == stream_id
    assert fields == {
        b"event": json.dumps(event, separators=(",", ":")).encode(),
        b"ct": str(content_type_id(Article)).encode(),
    }


# The internal interface


def test_send_and_resolve_audience(bus):
    from catalog.models import Article

    from wsserver.publisher.publishing import Outgoing, resolve_audience, send

    audience = resolve_audience(users=[user("bob")], models=[Article])
    assert json.loads(audience) == {
        "users": [str(user("bob").pk)],
        "content_types": [content_type_id(Article)],
    }
    ct = content_type_id(Article)
    assert send(
        [
            Outgoing({"action": "change", "content_type_id": ct}, content_type_id=ct),
            Outgoing(
                {"action": "change", "content_type_id": ct},
                content_type_id=ct,
                audience=audience,
            ),
        ]
    )
    flat, addressed = bus.messages()
    assert json.loads(flat)["action"] == "change"
    header, _, event = addressed.partition(b"\n")
    assert header == b"@" + audience.encode()
    assert json.loads(event)["content_type_id"] == ct
    # An admin-shaped event with an audience: both "ct" and "aud" in its entry.
    _, fields = bus.last_entry()
    assert fields[b"ct"] == str(ct).encode()
    assert fields[b"aud"] == audience.encode()


# The management command


def test_the_command_publishes(bus):
    from catalog.models import Product
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    alice, dave = user("alice"), user("dave")
    editors = Group.objects.get(name="product-editors")
    out = io.StringIO()
    call_command(
        "wsserver_publish",
        "export.ready",
        "--data",
        '{"url": "/exports/42.csv"}',
        "--user",
        "alice",
        "--user",
        str(dave.pk),
        "--group",
        "product-editors",
        "--permission",
        "catalog.view_article",
        "--model",
        "catalog.product",
        stdout=out,
    )
    audience = (
        f'{{"users":{json.dumps(sorted([str(alice.pk), str(dave.pk)]))},'
        f'"groups":[{editors.pk}],"permissions":["catalog.view_article"],'
        f'"content_types":[{content_type_id(Product)}]}}'
    ).replace(", ", ",")
    assert bus.one() == expected(
        bus, audience, "export.ready", {"url": "/exports/42.csv"}
    )
    assert out.getvalue() == f"published 'export.ready' to {audience}\n"

    # Options after the event or before it; data null by default.
    call_command("wsserver_publish", "--user", "bob", "ping", stdout=io.StringIO())
    assert bus.one() == expected(bus, f'{{"users":["{user("bob").pk}"]}}', "ping", None)


@pytest.mark.parametrize(
    "args, named",
    [
        (["x"], "no audience"),
        (["x", "--user", "nobody-at-all"], "--user nobody-at-all"),
        (["x", "--user", "999999"], "--user 999999"),
        (["x", "--group", "no-such-group"], "--group"),
        (["x", "--permission", "view_article"], "--permission"),
        (["x", "--model", "catalog.nothing"], "--model"),
        (["x", "--user", "bob", "--data", "{not json"], "--data"),
        (["x", "--user", "bob", "--data", "NaN"], "--data"),
        (["", "--user", "bob"], "event"),
    ],
)
def test_the_command_refuses_bad_arguments(bus, args, named):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as raised:
        call_command("wsserver_publish", *args)
    assert named in str(raised.value)
    assert bus.messages(wait=0.2) == []


def test_the_command_fails_when_redis_is_down(django_site, caplog):
    from django.core.management import CommandError, call_command
    from django.test import override_settings

    from wsserver.publisher.publishing import reset_client

    with override_settings(WSSERVER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        reset_client()
        with pytest.raises(CommandError, match="could not be published"):
            call_command("wsserver_publish", "x", "--user", "bob")
    reset_client()


def test_the_command_through_manage_py(site, redis_url):
    """As operators and the end-to-end tests run it: manage.py, its own process."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    channel = site.env["WSSERVER_CHANNEL"]
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    try:
        out = site.manage(
            "wsserver_publish", "test.hello", "--data", '{"n":1}', "--user", "alice"
        )
        assert "published 'test.hello'" in out
        message = pubsub.get_message(timeout=units(5))
        header, _, event = message["data"].partition(b"\n")
        assert header.startswith(b'@{"users":["')
        event = json.loads(event)
        assert list(event) == ["id", "event", "data"]
        assert (event["event"], event["data"]) == ("test.hello", {"n": 1})

        with pytest.raises(RuntimeError, match="no audience"):
            site.manage("wsserver_publish", "test.hello")
    finally:
        pubsub.close()
        client.close()


# The example site's use of it


def test_the_example_pages_button_notifies_the_user_only(bus):
    from django.test import Client

    client = Client()
    assert client.login(username="alice", password="pw")
    page = client.get("/")
    assert b"Send me a notification" in page.content
    response = client.post("/notify/")
    assert response.status_code == 200
    header, _, event = bus.one().partition(b"\n")
    assert header == f'@{{"users":["{user("alice").pk}"]}}'.encode()
    event = json.loads(event)
    assert event["event"] == "example.notification"
    assert "Hello alice" in event["data"]["message"]

    assert client.get("/notify/").status_code == 405
    assert Client().post("/notify/").status_code == 302  # to the login page
    # The form's CSRF token is required, as for any POST.
    strict = Client(enforce_csrf_checks=True)
    assert strict.login(username="alice", password="pw")
    assert strict.post("/notify/").status_code == 403
    assert bus.messages(wait=0.3) == []


def test_the_command_with_uuid_primary_keys(redis_url, tmp_path):
    """A custom user model with a UUID pk (EXAMPLE_CUSTOM_USER): the audience
    holds the pk as the sidecar writes it, str() of the UUID, whatever form
    it was given in."""
    channel = f"test-events-{uuid.uuid4().hex[:12]}"
    site = MainSite(
        f"sqlite:///{tmp_path}/site.sqlite3",
        redis_url,
        channel,
        EXAMPLE_CUSTOM_USER="1",
    ).prepare()
    pk = site.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model;"
        "print(get_user_model().objects.get(email='alice@example.com').pk)",
    ).splitlines()[-1]  # after the shell's "N objects imported automatically"
    assert str(uuid.UUID(pk)) == pk
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    try:
        for given in ["alice@example.com", pk, uuid.UUID(pk).hex]:
            site.manage("wsserver_publish", "x", "--user", given)
            message = pubsub.get_message(timeout=units(5))
            header = message["data"].partition(b"\n")[0]
            assert header == f'@{{"users":["{pk}"]}}'.encode(), given
    finally:
        pubsub.close()
        client.delete(f"{channel}:history")
        client.close()


@pytest.fixture(scope="module")
def page_sidecar(tmp_path_factory):
    # Created before the site for its port: the site's page connects to it.
    return SidecarProcess(tmp_path_factory.mktemp("sidecar"))


@pytest.fixture(scope="module")
def site_env(page_sidecar):
    return {"WSSERVER_WEBSOCKET_URL": page_sidecar.url}


def test_the_example_page_shows_the_notification_to_its_user_only(
    live_site, page_sidecar
):
    """In Chromium: Alice presses the button, her page shows the notification;
    the admin's page (a superuser) does not."""
    page_sidecar.env.update(
        DATABASE_URL=live_site.env["DATABASE_URL"],
        REDIS_URL=live_site.env["WSSERVER_REDIS_URL"],
        WS_CHANNEL=live_site.env["WSSERVER_CHANNEL"],
        WS_ALLOWED_ORIGINS=live_site.url,
    )
    with running(page_sidecar):
        alice, admin = page_for(live_site, "alice"), page_for(live_site, "admin")
        try:
            alice.evaluate("document.querySelector('#notify button').click()")
            [text] = alice.wait_for(f"{APP_EVENTS}.length && {APP_EVENTS}")
            assert text.startswith("Hello alice, this notification is for you")
            assert alice.evaluate(
                "document.querySelector('li.app-event').dataset.id"
            ), "the event's id"
            # The admin's own notification arrives; Alice's never did.
            admin.evaluate("document.querySelector('#notify button').click()")
            [text] = admin.wait_for(f"{APP_EVENTS}.length && {APP_EVENTS}")
            assert text.startswith("Hello admin")
            assert alice.evaluate(f"{APP_EVENTS}.length") == 1
        finally:
            alice.close()
            admin.close()


APP_EVENTS = "[...document.querySelectorAll('li.app-event')].map(li => li.textContent)"


def page_for(site: MainSite, username: str) -> Chromium:
    """Chromium showing the example page, logged in as this user, connected."""
    session = Browser(site.url)
    session.login(username, PASSWORD)
    [sessionid] = [c.value for c in session.cookies if c.name == "sessionid"]
    chromium = Chromium()
    chromium.set_cookie(site.url, "sessionid", sessionid)
    chromium.open(site.url + "/")
    chromium.wait_for("document.getElementById('status')?.textContent === 'connected'")
    return chromium
