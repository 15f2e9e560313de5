"""The Authenticator on real databases, configured as the sidecar.

Each test runs its ``sidecar_*`` and ``site_*`` functions in child processes
on the example site's databases (authdb.py says how and which): SQLite,
PostgreSQL and MariaDB, with auth.User and with the custom user model.
Tokens are made with django-sesame's create_token in a sidecar process with
the same settings as the one that checks them: exactly the main site's tokens.
What the one query reads is tested on its own in test_userquery.py.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from typing import Any

import pytest
from authdb import MANY, Database

pytestmark = pytest.mark.e2e

EMAIL_REVOKES = {"SESAME_INVALIDATE_ON_EMAIL_CHANGE": "true"}


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
