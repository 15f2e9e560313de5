"""The Authenticator and UserQuery on real databases, configured as the sidecar.

Django is set up once per process and for one configuration, while these
tests need the sidecar's (settings_auth, from WS_* and SESAME_* variables) in
several variants, on several databases, and other test modules set Django up
with the example site's settings. So the code that runs Django runs in a child
process: ``database.sidecar(function, **arguments)`` runs one of the
``sidecar_*`` functions of this module (each defined after the tests that use
it) in ``python tests/test_auth.py``, with the sidecar's settings on that
database, and returns what it returns (as JSON) and what it logged. Data is
changed the same way with the example site's settings (``site_*`` functions).
The assertions stay in the tests.

Databases are the example site's, made by its migrations and seed_demo, plus
the users of site_prepare: SQLite files, PostgreSQL and MariaDB (failing when
WSSERVER_TEST_MYSQL_URL does not answer), with auth.User and with the custom
user model (UUID pk, email as username; the sidecar configured with WS_USER_*).
Tokens are made with django-sesame's create_token in a sidecar process with
the same settings as the one that checks them: exactly the main site's tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import PASSWORD, SECRET_KEY, MainSite

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "example"
CUSTOM_USER = {
    "WS_USER_TABLE": "accounts_user",
    "WS_USER_PK": "uuid",
    "WS_USERNAME_FIELD": "email",
}
EMAIL_REVOKES = {"SESAME_INVALIDATE_ON_EMAIL_CHANGE": "true"}
# Users many-0... of site_prepare: more than one query's worth (500).
MANY = 600


@dataclasses.dataclass
class Child:
    """What a function run in a child process returned, and what it logged."""

    value: Any
    log: str


@dataclasses.dataclass
class Database:
    """An example site's database, and how to run code against it."""

    backend: str
    custom: bool
    site: MainSite
    pks: dict[str, str] = dataclasses.field(default_factory=dict)

    def name(self, user: str) -> str:
        """The username of a user of site_prepare, as this user model has it."""
        return f"{user}@example.com" if self.custom else user

    def pk(self, user: str) -> str:
        return self.pks[self.name(user)]

    def sidecar(self, function: Callable, /, env: dict | None = None, **arguments):
        """Run ``function(**arguments)`` in a process set up as the sidecar."""
        return run(
            "sidecar",
            {
                "DJANGO_SETTINGS_MODULE": "settings_auth",
                "DATABASE_URL": self.site.env["DATABASE_URL"],
                "SECRET_KEY": SECRET_KEY,
                **(CUSTOM_USER if self.custom else {}),
                **(env or {}),
            },
            function,
            arguments,
        )

    def on_site(self, function: Callable, /, **arguments):
        """Run ``function(**arguments)`` in a process set up as the main site."""
        env = {**self.site.env, "DJANGO_SETTINGS_MODULE": "exampleproject.settings"}
        return run("site", env, function, arguments)


def run(side: str, env: dict, function: Callable, arguments: dict) -> Child:
    """Call a function of this module in a child process (see __main__ below)."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SESAME_", "WS_", "DJANGO_"))
    }
    # This checkout's code (not an installed one), and the example's apps.
    path = [str(ROOT), str(EXAMPLE)] if side == "site" else [str(ROOT)]
    result = subprocess.run(
        [sys.executable, __file__, side, function.__name__],
        input=json.dumps(arguments),
        env={**environ, **env, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"{function.__name__} failed:\n{result.stderr}")
    return Child(json.loads(result.stdout.splitlines()[-1]), result.stderr)


@pytest.fixture(scope="module")
def databases(postgres, redis_url, tmp_path_factory, request):
    """Prepared databases by (backend, custom user model?), made on first use."""
    made: dict[tuple[str, bool], Database] = {}

    def get(backend: str, custom: bool) -> Database:
        if (backend, custom) in made:
            return made[backend, custom]
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('auth')}/site.sqlite3"
        elif backend == "postgresql":
            url = postgres.create()
        else:
            url = request.getfixturevalue("mysql").create()
        extra = {"EXAMPLE_CUSTOM_USER": "1"} if custom else {}
        site = MainSite(url, redis_url, f"auth-{uuid.uuid4().hex[:8]}", **extra)
        site.prepare()
        database = Database(backend, custom, site)
        database.pks = database.on_site(site_prepare).value
        made[backend, custom] = database
        return database

    return get


BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(params=BACKENDS)
def database(request, databases) -> Database:
    """A database with auth.User."""
    return databases(request.param, False)


@pytest.fixture(
    params=[(backend, custom) for custom in (False, True) for backend in BACKENDS],
    ids=lambda param: f"{param[0]}-{'custom' if param[1] else 'auth.User'}",
)
def any_database(request, databases) -> Database:
    """A database with auth.User, or with the custom user model."""
    return databases(*request.param)


def site_prepare() -> dict[str, str]:
    """More users and groups than seed_demo's; returns {username: pk}.

    erin: view_article directly and through "article-readers", change_product
    through "product-editors". dave and gus: product-editors and
    "nothing-granted", a group without permissions. frank: nothing-granted
    only. cora, nemo, rita: no permission (for tests that change them).
    many-0...: MANY users, every other one with view_product.
    The email column is made nullable (as custom user models may have it).
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, Permission
    from django.db import connection

    User = get_user_model()

    def name(user: str) -> str:
        return f"{user}@example.com" if User.USERNAME_FIELD == "email" else user

    if User.USERNAME_FIELD != "email":
        old = User._meta.get_field("email")
        new = User._meta.get_field("email").clone()
        new.set_attributes_from_name("email")
        new.null = True
        with connection.schema_editor() as editor:
            editor.alter_field(User, old, new)
    catalog = Permission.objects.filter(content_type__app_label="catalog")
    view_article = catalog.get(codename="view_article")
    view_product = catalog.get(codename="view_product")
    editors = Group.objects.get(name="product-editors")
    readers = Group.objects.create(name="article-readers")
    readers.permissions.set([view_article])
    nothing = Group.objects.create(name="nothing-granted")
    password = make_password(PASSWORD)

    def create(user: str, **fields: Any) -> Any:
        made = User(**{User.USERNAME_FIELD: name(user)}, password=password, **fields)
        if User.USERNAME_FIELD != "email":
            made.email = f"{user}@example.com"
        made.save()
        return made

    erin = create("erin")
    erin.user_permissions.set([view_article])
    erin.groups.set([readers, editors])
    User._default_manager.get(**{User.USERNAME_FIELD: name("dave")}).groups.add(nothing)
    create("gus").groups.set([editors, nothing])
    create("frank").groups.set([nothing])
    for user in ("cora", "nemo", "rita"):
        create(user)
    User._default_manager.bulk_create(
        [
            User(**{User.USERNAME_FIELD: name(f"many-{n}")}, password=password)
            for n in range(MANY)
        ]
    )
    many = User._default_manager.filter(
        **{f"{User.USERNAME_FIELD}__startswith": "many-"}
    )
    Through = User.user_permissions.through
    Through.objects.bulk_create(
        [
            Through(user_id=user.pk, permission_id=view_product.pk)
            for n, user in enumerate(many.order_by("pk"))
            if n % 2 == 0
        ]
    )
    return {user.get_username(): str(user.pk) for user in User._default_manager.all()}


def site_update(username: str, **fields: Any) -> None:
    """Change a user's row (QuerySet.update(): no signal, no validation)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User._default_manager.filter(**{User.USERNAME_FIELD: username}).update(**fields)


def site_set_password(username: str, password: str) -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User._default_manager.get(**{User.USERNAME_FIELD: username})
    user.set_password(password)
    user.save()


# UserQuery


def user_query():
    """A UserQuery for the fields authentication reads."""
    from django.contrib.auth import get_user_model

    from wsserver.auth import UserQuery

    User = get_user_model()
    return UserQuery(
        User, ["password", "is_active", "is_superuser", User.USERNAME_FIELD]
    )


def test_user_query_loads_users_with_their_permissions_and_groups(any_database):
    db = any_database
    users = ["admin", "alice", "bob", "dave", "erin", "frank"]
    missing = str(uuid.uuid4()) if db.custom else "987654"
    loaded = db.sidecar(
        sidecar_user_query, pks=[db.pk(user) for user in users] + [missing]
    ).value
    assert loaded["queries"] == 1
    assert loaded["deferred_but_read"] == []
    found = loaded["users"]
    assert set(found) == {db.name(user) for user in users}
    assert found[db.name("admin")] == {"codenames": [], "groups": [], "active": True}
    assert found[db.name("alice")]["codenames"] == ["catalog.view_article"]
    assert found[db.name("bob")] == {"codenames": [], "groups": [], "active": True}
    assert found[db.name("dave")] == {
        "codenames": ["catalog.change_product"],
        "groups": ["nothing-granted", "product-editors"],
        "active": True,
    }
    assert found[db.name("erin")] == {
        "codenames": ["catalog.change_product", "catalog.view_article"],
        "groups": ["article-readers", "product-editors"],
        "active": True,
    }
    # A group that grants nothing is still one of the user's groups.
    assert found[db.name("frank")]["groups"] == ["nothing-granted"]
    assert loaded["as_str_and_typed"] is True
    assert loaded["nothing"] == {"queries": 0, "found": 0}


def sidecar_user_query(pks: list[str]) -> dict:
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = user_query()
    with CaptureQueriesContext(connection) as queries:
        loaded = query.load_many(pks)
    groups = dict(Group.objects.values_list("pk", "name"))
    users = {}
    deferred_but_read = set()
    for found in loaded.values():
        user = found.user
        deferred_but_read |= user.get_deferred_fields() & {
            "password",
            "is_active",
            "is_superuser",
            user.USERNAME_FIELD,
        }
        users[user.get_username()] = {
            "codenames": sorted({f"{a}.{codename}" for a, codename in found.codenames}),
            "groups": sorted(groups[group_id] for group_id in found.group_ids),
            "active": user.is_active,
        }
    # Keys are the pk's Python value whether given as a str or typed.
    some = next(iter(loaded))
    typed = query.load(some)
    with CaptureQueriesContext(connection) as nothing:
        found_nothing = query.load_many([]) or query.load_many(["not a pk", None])
    return {
        "queries": len(queries),
        "users": users,
        "deferred_but_read": sorted(deferred_but_read),
        "as_str_and_typed": typed is not None and typed.user.pk == some,
        "nothing": {"queries": len(nothing), "found": len(found_nothing)},
    }


def test_user_query_reads_many_users_one_query_per_500(database):
    pks = [pk for name, pk in database.pks.items() if name.startswith("many-")]
    assert len(pks) == MANY
    loaded = database.sidecar(sidecar_load_many, pks=pks).value
    assert loaded == {"found": MANY, "with_permissions": MANY // 2, "queries": 2}


def sidecar_load_many(pks: list[str]) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        loaded = user_query().load_many(pks)
    return {
        "found": len(loaded),
        "with_permissions": sum(bool(found.codenames) for found in loaded.values()),
        "queries": len(queries),
    }


# Principals: permissions, groups, credentials


def test_principals_carry_their_group_ids(any_database):
    db = any_database
    users = ["admin", "bob", "dave", "erin", "frank", "gus"]
    tokens = db.sidecar(sidecar_tokens, usernames=[db.name(u) for u in users]).value
    checked = db.sidecar(
        sidecar_principals,
        tokens=[tokens[db.name(user)] for user in users],
        user_ids=[db.pk(user) for user in users],
    ).value
    for principals in (checked["authenticated"], checked["rechecked"]):
        by_name = {p["username"]: p for p in principals}
        assert by_name[db.name("admin")]["groups"] == []
        assert by_name[db.name("admin")]["models"] == ["*"]
        assert by_name[db.name("bob")]["groups"] == []
        assert by_name[db.name("dave")]["groups"] == [
            "nothing-granted",
            "product-editors",
        ]
        assert by_name[db.name("dave")]["models"] == ["catalog.product"]
        assert by_name[db.name("erin")]["groups"] == [
            "article-readers",
            "product-editors",
        ]
        assert by_name[db.name("erin")]["models"] == [
            "catalog.article",
            "catalog.product",
        ]
        assert by_name[db.name("frank")]["groups"] == ["nothing-granted"]
        assert by_name[db.name("frank")]["models"] == []
    # dave and gus have the same groups and permissions: one object of each.
    assert checked["shared"] == {"group_ids": True, "permissions": True}
    assert checked["hashable"] is True
    assert checked["same_as_authenticated"] is True


def sidecar_tokens(usernames: list[str], age: int = 0) -> dict[str, str]:
    """Tokens as the main site makes them with these settings (``age`` s ago)."""
    import time
    from unittest import mock

    from django.contrib.auth import get_user_model
    from sesame.tokens_v2 import create_token

    from wsserver.config import get_config

    User = get_user_model()
    users = User._default_manager.filter(**{f"{User.USERNAME_FIELD}__in": usernames})
    with mock.patch("time.time", return_value=time.time() - age):
        return {
            user.get_username(): create_token(user, get_config().sesame_scope)
            for user in users
        }


def describe(principals: list) -> list[dict | None]:
    """Principals as JSON, with the names of their models and groups."""
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType

    models = {ct.pk: f"{ct.app_label}.{ct.model}" for ct in ContentType.objects.all()}
    groups = dict(Group.objects.values_list("pk", "name"))
    return [
        None
        if principal is None
        else {
            "user_id": principal.user_id,
            "username": principal.username,
            "models": ["*"]
            if principal.permissions.everything
            else sorted(models[pk] for pk in principal.permissions.content_type_ids),
            "groups": sorted(groups[pk] for pk in principal.group_ids),
            "credentials": principal.credentials,
        }
        for principal in principals
    ]


def authenticator():
    """An Authenticator as the sidecar makes it, its content types loaded."""
    from wsserver.auth import Authenticator
    from wsserver.config import get_config

    made = Authenticator(get_config().sesame_scope)
    made.content_types.reload()  # as in a server that runs for a while
    return made


def sidecar_principals(tokens: list[str], user_ids: list[str]) -> dict:
    auth = authenticator()
    authenticated = auth.authenticate_many(tokens)
    rechecked = auth.reauthenticate(user_ids)
    by_name = {p.username: p for p in authenticated if p is not None}
    dave, gus = (by_name[name] for name in by_name if name.startswith(("dave", "gus")))
    return {
        "authenticated": describe(authenticated),
        "rechecked": describe(list(rechecked.values())),
        "shared": {
            "group_ids": dave.group_ids is gus.group_ids,
            "permissions": dave.permissions is gus.permissions,
        },
        "hashable": len({hash(p) for p in authenticated}) == len(authenticated),
        "same_as_authenticated": list(rechecked.values()) == authenticated,
    }


@pytest.mark.parametrize("email_revokes", [True, False], ids=["email", "password"])
def test_credentials_change_exactly_when_tokens_die(databases, email_revokes):
    db = databases("postgresql", False)
    env = EMAIL_REVOKES if email_revokes else {}
    cora = db.name("cora")
    token = db.sidecar(sidecar_tokens, env=env, usernames=[cora]).value[cora]
    new = uuid.uuid4().hex  # each run of the test changes them for real
    states = []
    changes = [
        lambda: None,
        lambda: db.on_site(site_update, username=cora, first_name=new[:8]),
        lambda: db.on_site(site_update, username=cora, email=f"{new}@example.com"),
        lambda: db.on_site(site_set_password, username=cora, password=new),
    ]
    for change in changes:
        change()
        state = db.sidecar(
            sidecar_credentials, env=env, user_id=db.pk("cora"), token=token
        ).value
        states.append(state)
        token = state["fresh_token"]
    # For each change: [a token made before is still valid, credentials changed]
    first_name, email, password = (
        [now["valid"], now["credentials"] != before["credentials"]]
        for before, now in itertools.pairwise(states)
    )
    assert states[0]["valid"]
    assert first_name == [True, False]
    assert email == ([False, True] if email_revokes else [True, False])
    assert password == [False, True]


def sidecar_credentials(user_id: str, token: str) -> dict:
    """The user's credentials, whether ``token`` is valid, and a fresh token."""
    from django.contrib.auth import get_user_model
    from sesame.tokens_v2 import create_token

    from wsserver.config import get_config

    auth = authenticator()
    user = get_user_model()._default_manager.get(pk=user_id)
    return {
        "credentials": auth.reauthenticate([user_id])[user_id].credentials,
        "valid": auth.authenticate(token) is not None,
        "fresh_token": create_token(user, get_config().sesame_scope),
    }


# One token, one user: what goes wrong for them refuses them only


def test_a_token_whose_check_raises_is_refused_alone(database):
    """django-sesame raises for a user whose email is NULL (email revokes)."""
    db = database
    users = ["admin", "alice", "nemo", "dave", "erin"]
    names = [db.name(user) for user in users]
    made = db.sidecar(sidecar_tokens, env=EMAIL_REVOKES, usernames=names).value
    tokens = [made[name] for name in names]
    db.on_site(site_update, username=db.name("nemo"), email=None)
    checked = db.sidecar(
        sidecar_authenticate,
        env=EMAIL_REVOKES,
        tokens=tokens,
        user_ids=[db.pk(user) for user in users],
    )
    result = checked.value
    usernames = [p and p["username"] for p in result["batch"]]
    assert usernames == ["admin", "alice", None, "dave", "erin"]
    assert result["batch_queries"] == 1  # no retry: the query did not fail
    assert [p and p["username"] for p in result["alone"]] == usernames
    rechecked = {user_id: p and p["username"] for user_id, p in result["rechecked"]}
    assert rechecked == {db.pk(u): u if u != "nemo" else None for u in users}
    # Logged once per call, with the user and the exception, never the token.
    warnings = [line for line in checked.log.splitlines() if "refused" in line]
    assert len(warnings) == 2 + 1  # the batch, nemo alone, the recheck
    for line in warnings:
        assert f"user {db.pk('nemo')}:" in line
        assert "TypeError" in line
    for token in tokens:
        assert token not in checked.log


def sidecar_authenticate(tokens: list[str], user_ids: list[str] = ()) -> dict:
    """authenticate_many(), authenticate() for each token, reauthenticate()."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    auth = authenticator()
    with CaptureQueriesContext(connection) as queries:
        batch = auth.authenticate_many(tokens)
    alone, alone_queries = [], []
    for token in tokens:
        with CaptureQueriesContext(connection) as each:
            alone.append(auth.authenticate(token))
        alone_queries.append(len(each))
    with CaptureQueriesContext(connection) as recheck:
        rechecked = auth.reauthenticate(user_ids)
    described = describe(list(rechecked.values()))
    return {
        "batch": describe(batch),
        "batch_queries": len(queries),
        "alone": describe(alone),
        "alone_queries": alone_queries,
        "rechecked": list(zip(rechecked, described, strict=True)),
        "recheck_queries": len(recheck),
    }


@contextlib.contextmanager
def reading_breaks_for(db: Database, user: str):
    """PostgreSQL raises a DataError for any query that reads the user's row."""
    import psycopg

    pk = int(db.pk(user))
    with psycopg.connect(db.site.env["DATABASE_URL"], autocommit=True) as admin:
        admin.execute("ALTER TABLE auth_user ENABLE ROW LEVEL SECURITY")
        admin.execute("ALTER TABLE auth_user FORCE ROW LEVEL SECURITY")  # owner too
        admin.execute(
            "CREATE POLICY breaks ON auth_user "
            f"USING (id <> {pk} OR 1 / (id - {pk}) = 0)"
        )
        try:
            yield
        finally:
            admin.execute("DROP POLICY breaks ON auth_user")
            admin.execute("ALTER TABLE auth_user NO FORCE ROW LEVEL SECURITY")
            admin.execute("ALTER TABLE auth_user DISABLE ROW LEVEL SECURITY")


def test_a_query_that_fails_for_one_user_refuses_only_that_user(databases):
    db = databases("postgresql", False)
    users = ["admin", "alice", "bob", "rita", "dave", "erin", "frank", "gus"]
    names = [db.name(user) for user in users]
    made = db.sidecar(sidecar_tokens, usernames=names).value
    with reading_breaks_for(db, "rita"):
        checked = db.sidecar(
            sidecar_authenticate,
            tokens=[made[name] for name in names],
            user_ids=[db.pk(user) for user in users],
        )
    result = checked.value
    expected = [user if user != "rita" else None for user in users]
    assert [p and p["username"] for p in result["batch"]] == expected
    assert [p and p["username"] for p in result["alone"]] == expected
    assert [p and p["username"] for _, p in result["rechecked"]] == expected
    # The failing query is split in halves down to rita: 1 + 2 * log2(8).
    assert result["batch_queries"] == 7
    assert result["recheck_queries"] == 7
    warnings = [line for line in checked.log.splitlines() if "refused" in line]
    assert len(warnings) == 3
    assert all(f"user {db.pk('rita')}:" in line for line in warnings)
    assert all("DataError: division by zero" in line for line in warnings)


def test_an_outage_is_no_refusal_it_propagates(databases):
    db = databases("postgresql", False)
    closed = db.site.env["DATABASE_URL"].replace(":5432/", ":9/")  # discard port
    result = db.sidecar(sidecar_outage, env={"DATABASE_URL": closed}).value
    assert result == {
        "authenticate_many": "OperationalError",
        "reauthenticate": "OperationalError",
        "through Database": "DatabaseUnavailable",
    }


def sidecar_outage() -> dict:
    """What a well-formed token and a recheck raise when the database is down."""
    import asyncio

    from django.contrib.auth import get_user_model
    from sesame.tokens_v2 import create_token

    from wsserver.auth import Authenticator
    from wsserver.config import get_config
    from wsserver.database import Database

    auth = Authenticator(get_config().sesame_scope)  # no query: nothing to warm
    user = get_user_model()(pk=1, username="someone", password="x", email="x@x")
    token = create_token(user, get_config().sesame_scope)
    raised = {}
    for name, call in [
        ("authenticate_many", lambda: auth.authenticate_many([token, token])),
        ("reauthenticate", lambda: auth.reauthenticate(["1", "2"])),
    ]:
        try:
            call()
        except Exception as exc:
            raised[name] = type(exc).__name__

    async def through_database():
        database = Database(1)
        try:
            await database.run(auth.authenticate_many, [token])
        except Exception as exc:
            return type(exc).__name__
        finally:
            database.close()

    raised["through Database"] = asyncio.run(through_database())
    return raised


# Rechecks


def test_rechecks_read_500_users_per_query(database):
    db = database
    many = [pk for name, pk in db.pks.items() if name.startswith("many-")]
    # Ids no user has, or can have: refused, without an error.
    absent = ["123456789", "not an id", "99999999999999999999", "-1", ""]
    result = db.sidecar(sidecar_recheck, user_ids=[*many, *absent]).value
    assert result["keys"] == [*many, *absent]
    assert result["queries"] == 2
    assert result["found"] == MANY
    assert result["with_view_product"] == MANY // 2


def sidecar_recheck(user_ids: list[str]) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    auth = authenticator()
    with CaptureQueriesContext(connection) as queries:
        rechecked = auth.reauthenticate(user_ids)
    principals = [p for p in rechecked.values() if p is not None]
    return {
        "keys": list(rechecked),
        "queries": len(queries),
        "found": len(principals),
        "with_view_product": sum(
            bool(p.permissions.content_type_ids) for p in principals
        ),
    }


# Tokens that cannot be valid cost no query


def test_tokens_that_cannot_be_valid_make_no_query(any_database):
    db = any_database
    alice, bob = db.name("alice"), db.name("bob")
    result = db.sidecar(sidecar_junk, username=alice, other=bob).value
    assert result["valid"] == {"principal": True, "queries": 1}
    for name, outcome in result["junk"].items():
        assert outcome == {"principal": False, "queries": 0}, name
    assert result["junk batch"] == {"principals": 0, "queries": 0}
    # With valid tokens, junk ones do not join the query: bob's expired token
    # adds no id to it.
    assert result["mixed batch"] == {"principals": 2, "queries": 1, "ids": 1}


def sidecar_junk(username: str, other: str) -> dict:
    """Tokens that cannot be valid: how many queries each costs."""
    import base64

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from sesame import packers
    from sesame.tokens_v2 import create_token

    from wsserver.config import get_config

    auth = authenticator()
    User = get_user_model()
    user = User._default_manager.get(**{User.USERNAME_FIELD: username})
    good = create_token(user, get_config().sesame_scope)
    data = base64.urlsafe_b64decode(good + "=" * (-len(good) % 4))

    def encode(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    junk = {
        "empty": "",
        "short": "abc",
        "not base64url": "not a token!",
        "truncated": good[:-3],
        "longer signature": encode(data + b"\0"),
        "only a pk": encode(packers.packer.pack_pk(user.pk)),
        "expired": sidecar_tokens([other], age=3600)[other],
        "v1 format": f"{good}:AAAAAA:{'A' * 27}",
        "not a str": None,
    }
    outcomes = {}
    for name, token in junk.items():
        with CaptureQueriesContext(connection) as queries:
            principal = auth.authenticate(token)
        outcomes[name] = {"principal": principal is not None, "queries": len(queries)}
    with CaptureQueriesContext(connection) as queries:
        principal = auth.authenticate(good)
    valid = {"principal": principal is not None, "queries": len(queries)}
    with CaptureQueriesContext(connection) as queries:
        batch = auth.authenticate_many(list(junk.values()))
    junk_batch = {
        "principals": sum(p is not None for p in batch),
        "queries": len(queries),
    }
    with CaptureQueriesContext(connection) as queries:
        batch = auth.authenticate_many([junk["expired"], good, junk["truncated"], good])
    # The ids the query read: its last IN list.
    ids = queries[0]["sql"].rsplit(" IN (", 1)[1].rstrip(")").count(",") + 1
    mixed = {
        "principals": sum(p is not None for p in batch),
        "queries": len(queries),
        "ids": ids,
    }
    return {
        "valid": valid,
        "junk": outcomes,
        "junk batch": junk_batch,
        "mixed batch": mixed,
    }


# Configurations


def test_tokens_that_pack_another_unique_field(database):
    """SESAME_PRIMARY_KEY_FIELD=username: two queries per batch, same results."""
    db = database
    result = db.sidecar(
        sidecar_by_username,
        env={"SESAME_PRIMARY_KEY_FIELD": "username"},
        usernames=["admin", "alice", "carol", "dave", "erin"],
        user_ids=[db.pk("dave"), db.pk("erin")],
    ).value
    batch = {p["username"]: p for p in result["batch"] if p is not None}
    assert list(batch) == ["admin", "alice", "dave", "erin"]  # not carol
    assert result["batch"][-1] is None  # the NUL token
    assert batch["dave"]["groups"] == ["nothing-granted", "product-editors"]
    assert batch["erin"]["models"] == ["catalog.article", "catalog.product"]
    assert result["batch_queries"] == 2
    assert result["nul_queries"] == 0
    assert [p["username"] for p in result["rechecked"]] == ["dave", "erin"]


def sidecar_by_username(usernames: list[str], user_ids: list[str]) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from sesame.tokens_v2 import create_token

    from wsserver.config import get_config

    auth = authenticator()
    tokens = list(sidecar_tokens(usernames).values())
    # A username that PostgreSQL refuses in a query (DataError).
    nul = create_token(
        get_user_model()(username="da\x00ve", password="x"), get_config().sesame_scope
    )
    with CaptureQueriesContext(connection) as queries:
        batch = auth.authenticate_many([*tokens, nul])
    with CaptureQueriesContext(connection) as nul_queries:
        assert auth.authenticate(nul) is None
    return {
        "batch": describe(batch),
        "batch_queries": len(queries),
        "nul_queries": len(nul_queries),
        "rechecked": describe(list(auth.reauthenticate(user_ids).values())),
    }


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_token_field_that_is_not_unique_in_the_database(databases, backend):
    """Two users with the username a token packs: it is refused, not guessed.

    Not on SQLite, whose schema editor fails to drop the constraint.
    """
    db = databases(backend, False)
    twins = db.on_site(site_twins).value
    env = {"SESAME_PRIMARY_KEY_FIELD": "username"}
    result = db.sidecar(
        sidecar_twins, env=env, pks=twins, others=[db.name("alice")]
    ).value
    assert result == {"twins": [None, None], "others": ["alice"]}


def site_twins() -> list[str]:
    """Two users named "twin": the column's unique constraint is dropped."""
    from django.contrib.auth.models import User
    from django.db import connection

    old = User._meta.get_field("username")
    new = old.clone()
    new.set_attributes_from_name("username")
    new._unique = False
    with connection.schema_editor() as editor:
        editor.alter_field(User, old, new)
    return [str(User.objects.create(username="twin").pk) for _ in range(2)]


def sidecar_twins(pks: list[str], others: list[str]) -> dict:
    from django.contrib.auth import get_user_model
    from sesame.tokens_v2 import create_token

    from wsserver.config import get_config

    User = get_user_model()
    scope = get_config().sesame_scope
    tokens = [create_token(User.objects.get(pk=pk), scope) for pk in pks]
    tokens += sidecar_tokens(others).values()
    principals = authenticator().authenticate_many(tokens)
    return {
        "twins": [p and p.username for p in principals[: len(pks)]],
        "others": [p and p.username for p in principals[len(pks) :]],
    }


def test_a_sqlite_that_allows_999_parameters_per_query(databases):
    """As SQLite before 3.32: a batch of 500 takes two queries, not an error."""
    db = databases("sqlite", False)
    names = sorted(name for name in db.pks if name.startswith("many-"))[:500]
    tokens = db.sidecar(sidecar_tokens, usernames=names).value
    result = db.sidecar(
        sidecar_limited_sqlite,
        tokens=list(tokens.values()),
        user_ids=[db.pks[name] for name in names],
    ).value
    assert result == {
        "authenticated": 500,
        "queries": 2,
        "rechecked": 500,
        "recheck_queries": 2,
    }


def sidecar_limited_sqlite(tokens: list[str], user_ids: list[str]) -> dict:
    import sqlite3

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    auth = authenticator()
    connection.ensure_connection()
    connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    with CaptureQueriesContext(connection) as queries:
        authenticated = auth.authenticate_many(tokens)
    with CaptureQueriesContext(connection) as recheck_queries:
        rechecked = auth.reauthenticate(user_ids)
    return {
        "authenticated": sum(p is not None for p in authenticated),
        "queries": len(queries),
        "rechecked": sum(p is not None for p in rechecked.values()),
        "recheck_queries": len(recheck_queries),
    }


if __name__ == "__main__":
    # A child process (see run()): ``test_auth.py site|sidecar FUNCTION``,
    # with the function's arguments as JSON on stdin; PYTHONPATH and
    # DJANGO_SETTINGS_MODULE say which side it is.
    import logging

    import django

    import wsserver

    # This checkout's code, also when another is installed (editable).
    assert Path(wsserver.__file__).is_relative_to(ROOT), wsserver.__file__
    django.setup()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    function = globals()[sys.argv[2]]
    print(json.dumps(function(**json.loads(sys.stdin.read()))))
