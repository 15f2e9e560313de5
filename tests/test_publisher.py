"""The publisher app inside the example site, in-process, with a real Redis.

Django is set up in this process with the example site's settings on a fresh
SQLite database, once for the session (setup_example_site): test_publish_api
shares it; no other test module sets up Django in-process.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time

import pytest
import redis
from processes import EXAMPLE, free_port
from waiting import units

pytestmark = pytest.mark.e2e


_set_up = False


def setup_example_site(tmp_path_factory) -> None:
    """Set up Django in this process with the example site, on a fresh SQLite
    database with the demo users (password "pw"): once for the session."""
    global _set_up
    if _set_up:
        return
    os.environ.update(
        DJANGO_SETTINGS_MODULE="exampleproject.settings",
        DATABASE_URL=f"sqlite:///{tmp_path_factory.mktemp('publisher')}/db.sqlite3",
        SECRET_KEY="publisher-test-secret-key",
    )
    sys.path[:0] = [str(EXAMPLE)]
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()
    call_command("migrate", verbosity=0)
    call_command("seed_demo", password="pw", stdout=open(os.devnull, "w"))  # noqa: SIM115
    _set_up = True


@pytest.fixture(scope="module")
def django_site(tmp_path_factory, redis_url):
    setup_example_site(tmp_path_factory)
    return redis_url


@pytest.fixture
def subscriber(django_site, channel, redis_acl_users):
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
        yield Listener(pubsub, client, channel)
        pubsub.close()
        client.delete(f"{channel}:history")
    reset_client()


class Listener:
    def __init__(self, pubsub, redis, channel):
        self.pubsub = pubsub
        self.redis = redis
        self.channel = channel

    def events(self, wait: float = 0.5) -> list[dict]:
        """Every event received within ``wait`` time units of the last one.

        Time passing is the test: a quiet ``wait`` shows that no more come.
        """
        events = []
        deadline = time.monotonic() + units(wait)
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None:
                events.append(json.loads(message["data"]))
                deadline = time.monotonic() + units(wait)
        return events


@pytest.fixture
def admin_client(django_site):
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert client.login(username="admin", password="pw")
    return client


def test_an_admin_addition_is_published_with_the_guides_fields(
    subscriber, admin_client
):
    from catalog.models import Article
    from django.contrib.contenttypes.models import ContentType

    response = admin_client.post(
        "/admin/catalog/article/add/", {"title": "Published", "body": "b"}
    )
    assert response.status_code == 302
    [event] = subscriber.events()
    article = Article.objects.get(title="Published")
    # The id is the event's entry in the channel's history stream.
    [(stream_id, fields)] = subscriber.redis.xrevrange(
        f"{subscriber.channel}:history", count=1
    )
    assert event.pop("id") == stream_id.decode()
    assert json.loads(fields[b"event"]) == event
    # Beside it, its content type: a resume filters entries without parsing.
    assert fields[b"ct"] == str(event["content_type_id"]).encode()
    assert event == {
        "model": "article",
        "object": "Published",
        "message": "Added.",
        "timestamp": event["timestamp"],
        "user": "admin",
        "content_type_id": ContentType.objects.get_for_model(Article).pk,
        "object_id": str(article.pk),
        "action": "addition",
    }
    logged_at = datetime.datetime.fromisoformat(event["timestamp"])
    assert abs(time.time() - logged_at.timestamp()) < 60


def test_a_rolled_back_admin_change_publishes_nothing(subscriber, admin_client):
    from catalog.models import Product
    from django.contrib.admin.models import LogEntry
    from django.db.models.signals import post_save

    def fail(sender, **kwargs):
        raise RuntimeError("the request fails after the LogEntry was written")

    post_save.connect(fail, sender=LogEntry, dispatch_uid="test-rollback")
    try:
        response = admin_client.post(
            "/admin/catalog/product/add/", {"name": "Ghost", "price": "1.00"}
        )
    finally:
        post_save.disconnect(dispatch_uid="test-rollback", sender=LogEntry)
    assert response.status_code == 500
    assert not Product.objects.filter(name="Ghost").exists()
    assert subscriber.events() == []

    # The next committed change is published as usual.
    admin_client.post("/admin/catalog/product/add/", {"name": "Real", "price": "1"})
    assert [event["object"] for event in subscriber.events()] == ["Real"]


def test_a_bulk_delete_of_three_objects_publishes_three_events(
    subscriber, admin_client
):
    from catalog.models import Supplier

    suppliers = [Supplier.objects.create(name=f"Bulk {n}") for n in range(3)]
    response = admin_client.post(
        "/admin/catalog/supplier/",
        {
            "action": "delete_selected",
            "post": "yes",
            "_selected_action": [str(s.pk) for s in suppliers],
        },
    )
    assert response.status_code == 302
    events = subscriber.events()
    assert sorted(e["object_id"] for e in events) == sorted(
        str(s.pk) for s in suppliers
    )
    assert {e["action"] for e in events} == {"deletion"}


def test_a_single_object_action_is_published_once(subscriber, admin_client):
    from catalog.models import Supplier

    supplier = Supplier.objects.create(name="Alone")
    admin_client.post(
        "/admin/catalog/supplier/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [supplier.pk]},
    )
    assert [e["object"] for e in subscriber.events()] == ["Alone"]


def test_redis_down_the_admin_still_works_and_the_failure_is_logged(
    django_site, admin_client, caplog
):
    from catalog.models import Article
    from django.test import override_settings

    from wsserver.publisher.publishing import reset_client

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(WSSERVER_REDIS_URL=nobody):
        reset_client()
        with caplog.at_level(logging.ERROR, logger="wsserver.publisher"):
            response = admin_client.post(
                "/admin/catalog/article/add/", {"title": "Offline", "body": ""}
            )
    reset_client()
    assert response.status_code == 302
    assert Article.objects.filter(title="Offline").exists()
    [record] = caplog.records
    assert "could not publish 1 event(s)" in record.getMessage()
    assert nobody in record.getMessage()


# As on a site that also logs users in with django-sesame's links.
SESAME_LOGIN = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame.backends.ModelBackend",
]


def test_the_token_view(django_site, admin_client):
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings
    from sesame.utils import get_user

    anonymous = Client().get("/wsserver/token/")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "not logged in"}

    response = admin_client.get("/wsserver/token/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = response.json()["token"]
    admin = get_user_model().objects.get(username="admin")
    with override_settings(AUTHENTICATION_BACKENDS=SESAME_LOGIN):
        assert get_user(token, scope="wsserver") == admin
        # Not a login link for the site: django-sesame's login middleware and
        # view accept tokens of the default scope only.
        assert get_user(token) is None
    assert admin_client.post("/wsserver/token/").status_code == 405


def test_the_token_view_uses_the_configured_scope(django_site, admin_client):
    from django.test import override_settings
    from sesame.utils import get_user

    with override_settings(WSSERVER_SESAME_SCOPE="notifications"):
        token = admin_client.get("/wsserver/token/").json()["token"]
    with override_settings(AUTHENTICATION_BACKENDS=SESAME_LOGIN):
        assert get_user(token) is None
        assert get_user(token, scope="wsserver") is None
        assert get_user(token, scope="notifications").username == "admin"


def test_the_template_tag(django_site):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import AnonymousUser
    from django.template import Context, Template
    from django.test import RequestFactory, override_settings
    from sesame.utils import get_user

    template = Template("{% load wsserver %}[{% wsserver_token %}]")
    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="alice")
    token = template.render(Context({"request": request}))[1:-1]
    with override_settings(AUTHENTICATION_BACKENDS=SESAME_LOGIN):
        assert get_user(token, scope="wsserver") == request.user
        assert get_user(token) is None

    request.user = AnonymousUser()
    assert template.render(Context({"request": request})) == "[]"
