"""UserQuery on its own: what its one query reads, on real databases.

The example site's databases (authdb.py): SQLite, PostgreSQL and MariaDB,
with auth.User (int pk) and the custom user model (UUID pk), plus databases
whose auth_user has a bigint pk. Each test reads them in a child process set
up as the sidecar (its ``sidecar_*`` functions), with a UserQuery for the
fields authentication reads; nothing here decides (wsserver.auth does, and
is tested in test_auth.py).
"""

from __future__ import annotations

import uuid

import pytest
from authdb import MANY

pytestmark = pytest.mark.e2e

# The sidecar reading auth_user as a custom user model with a bigint pk.
BIGINT_USER = {
    "WS_USER_TABLE": "auth_user",
    "WS_USER_PK": "bigint",
    "WS_USERNAME_FIELD": "username",
}
# A pk past 32 bits: only a bigint column holds it.
BIG_PK = 2**40 + 7


def user_query():
    """A UserQuery for the fields authentication reads."""
    from django.contrib.auth import get_user_model

    from wsserver.userquery import UserQuery

    User = get_user_model()
    return UserQuery(
        User, ["password", "is_active", "is_superuser", User.USERNAME_FIELD]
    )


def loaded_as_json(loaded: dict) -> dict:
    """{username: what UserQuery loaded for them}, with names for ids."""
    from django.contrib.auth.models import Group

    groups = dict(Group.objects.values_list("pk", "name"))
    return {
        found.user.get_username(): {
            "codenames": sorted({f"{a}.{codename}" for a, codename in found.codenames}),
            "groups": sorted(groups[group_id] for group_id in found.group_ids),
            "active": found.user.is_active,
            "superuser": found.user.is_superuser,
        }
        for found in loaded.values()
    }


NOTHING = {"codenames": [], "groups": [], "active": True, "superuser": False}


def test_loads_users_with_their_codenames_and_groups(any_database):
    db = any_database
    users = ["admin", "alice", "bob", "carol", "dave", "erin", "frank"]
    missing = str(uuid.uuid4()) if db.custom else "987654"
    loaded = db.sidecar(
        sidecar_load_many, pks=[db.pk(user) for user in users] + [missing]
    ).value
    assert loaded["queries"] == 1
    found = loaded["users"]
    # The missing user is left out, without an error.
    assert set(found) == {db.name(user) for user in users}
    # A superuser's flag is read; what it grants is not UserQuery's business.
    assert found[db.name("admin")] == {**NOTHING, "superuser": True}
    # Direct permissions.
    assert found[db.name("alice")] == {**NOTHING, "codenames": ["catalog.view_article"]}
    assert found[db.name("bob")] == NOTHING
    # Inactive users are loaded too, with their permissions: wsserver.auth
    # refuses them.
    assert found[db.name("carol")] == {
        **NOTHING,
        "codenames": ["catalog.view_article"],
        "active": False,
    }
    # Through a group; a group that grants nothing is still one of the groups.
    assert found[db.name("dave")] == {
        **NOTHING,
        "codenames": ["catalog.change_product"],
        "groups": ["nothing-granted", "product-editors"],
    }
    # Directly and through groups, together.
    assert found[db.name("erin")] == {
        **NOTHING,
        "codenames": ["catalog.change_product", "catalog.view_article"],
        "groups": ["article-readers", "product-editors"],
    }
    assert found[db.name("frank")] == {**NOTHING, "groups": ["nothing-granted"]}
    # Only the fields asked for are loaded, and reading them costs no query.
    assert loaded["deferred_but_read"] == []
    assert loaded["queries_reading_fields"] == 0


def sidecar_load_many(pks: list[str]) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = user_query()
    with CaptureQueriesContext(connection) as queries:
        loaded = query.load_many(pks)
    read = {"password", "is_active", "is_superuser", query.User.USERNAME_FIELD}
    deferred_but_read = {
        name
        for found in loaded.values()
        for name in found.user.get_deferred_fields() & read
    }
    with CaptureQueriesContext(connection) as reading:
        for found in loaded.values():
            for name in read:
                getattr(found.user, name)
    return {
        "queries": len(queries),
        "users": loaded_as_json(loaded),
        "deferred_but_read": sorted(deferred_but_read),
        "queries_reading_fields": len(reading),
    }


def test_keys_are_the_pks_python_values(any_database):
    db = any_database
    result = db.sidecar(sidecar_keys, pk=db.pk("alice")).value
    # A pk given as a str, or as its Python value, is the same key.
    assert result["keys_are_typed"] is True
    assert result["same_key"] is True
    assert result["load"] == db.name("alice")
    # Values no user can have make no query and find nobody.
    assert result["nothing"] == {"queries": 0, "found": 0, "keys": [None] * 4}


def sidecar_keys(pk: str) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = user_query()
    [key] = query.load_many([pk])
    typed = query.pk.to_python(pk)
    found = query.load(typed)
    impossible = ["not a pk", None, "", "1\x00"]
    with CaptureQueriesContext(connection) as nothing:
        found_nothing = query.load_many([]) or query.load_many(impossible)
    return {
        "keys_are_typed": type(key) is type(typed) and key == typed,
        "same_key": query.key(pk) == query.key(typed) == key,
        "load": found.user.get_username(),
        "nothing": {
            "queries": len(nothing),
            "found": len(found_nothing),
            "keys": [query.key(value) for value in impossible],
        },
    }


def test_reads_many_users_one_query_per_500(database):
    pks = [pk for name, pk in database.pks.items() if name.startswith("many-")]
    assert len(pks) == MANY
    loaded = database.sidecar(sidecar_count, pks=pks).value
    assert loaded == {
        "max_users": 500,
        "found": MANY,
        "with_permissions": MANY // 2,
        "queries": 2,
    }


def test_a_sqlite_that_allows_999_parameters_per_query(databases):
    """As SQLite before 3.32: each id is a parameter three times."""
    db = databases("sqlite", False)
    pks = [pk for name, pk in db.pks.items() if name.startswith("many-")][:500]
    loaded = db.sidecar(sidecar_count, pks=pks, sqlite_limit=999).value
    assert loaded == {
        "max_users": 333,
        "found": 500,
        "with_permissions": 250,
        "queries": 2,
    }


def sidecar_count(pks: list[str], sqlite_limit: int | None = None) -> dict:
    import sqlite3

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = user_query()
    if sqlite_limit is not None:
        connection.ensure_connection()
        connection.connection.setlimit(
            sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, sqlite_limit
        )
    with CaptureQueriesContext(connection) as queries:
        loaded = query.load_many(pks)
    return {
        "max_users": query.max_users(),
        "found": len(loaded),
        "with_permissions": sum(bool(found.codenames) for found in loaded.values()),
        "queries": len(queries),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_bigint_pk(databases, backend):
    """auth_user with a bigint pk, read as a custom user model (WS_USER_PK=bigint)."""
    db = databases.new(backend)
    db.on_site(site_bigint_user, pk=BIG_PK)
    result = db.sidecar(
        sidecar_bigint,
        env=BIGINT_USER,
        pks=[str(BIG_PK), BIG_PK + 1, str(2**63)],  # found, missing, impossible
    ).value
    assert result == {
        "queries": 1,
        "keys": [BIG_PK],
        "key_is_int": True,
        "users": {
            "big": {
                **NOTHING,
                "codenames": ["catalog.change_product", "catalog.view_article"],
                "groups": ["product-editors"],
            }
        },
        "impossible": None,
    }


def site_bigint_user(pk: int) -> None:
    """User "big", with a pk past 32 bits: view_article, group product-editors.

    On PostgreSQL, the user's columns become bigint first (as with a site
    whose DEFAULT_AUTO_FIELD is BigAutoField); SQLite's integer holds it as is.
    """
    from django.contrib.auth.models import Group, Permission
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE auth_user ALTER COLUMN id TYPE bigint")
            for table in ("auth_user_groups", "auth_user_user_permissions"):
                cursor.execute(f"ALTER TABLE {table} ALTER COLUMN user_id TYPE bigint")
        cursor.execute(
            "INSERT INTO auth_user (id, password, is_superuser, username, "
            "first_name, last_name, email, is_staff, is_active, date_joined) "
            "VALUES (%s, 'x', %s, 'big', '', '', '', %s, %s, CURRENT_TIMESTAMP)",
            [pk, False, False, True],
        )
        cursor.execute(
            "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)",
            [pk, Group.objects.get(name="product-editors").pk],
        )
        cursor.execute(
            "INSERT INTO auth_user_user_permissions (user_id, permission_id) "
            "VALUES (%s, %s)",
            [pk, Permission.objects.get(codename="view_article").pk],
        )


def sidecar_bigint(pks: list) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = user_query()
    assert query.pk.get_internal_type() == "BigAutoField"
    with CaptureQueriesContext(connection) as queries:
        loaded = query.load_many(pks)
    return {
        "queries": len(queries),
        "keys": list(loaded),
        "key_is_int": all(type(key) is int for key in loaded),
        "users": loaded_as_json(loaded),
        "impossible": query.key(pks[-1]),
    }
