"""One round trip: users' rows, the codenames of their permissions, their groups.

:class:`UserQuery` is the SQL behind :class:`wsserver.auth.Authenticator`:
authenticating a batch of tokens, or rechecking a batch of users, costs one
query per 500 users, which reads each user's row (only the fields
authentication needs), the (app_label, codename) of each permission they have
directly or through a group, and their group ids. Built from the user model's
metadata, so it follows a custom user model's table and join tables; plain
SQL that PostgreSQL, SQLite and MySQL/MariaDB all accept. Synchronous Django
code; it decides nothing (inactive users are loaded too).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection

__all__ = ["MAX_USERS_PER_QUERY", "Loaded", "UserQuery", "field_key"]

# Users read by one query (the Batcher sends up to 500 tokens at once).
MAX_USERS_PER_QUERY = 500


class Loaded(NamedTuple):
    """A user as UserQuery reads them: the row and what it gives access to."""

    user: Any
    # (app_label, codename) of each permission, direct or through a group.
    codenames: list[tuple[str, str]]
    group_ids: set[int]


def field_key(field: Any, value: Any) -> Any:
    """A value of a model field as a dictionary key, or None if it cannot be.

    Normalizes the forms a value arrives in (str from control messages,
    int or UUID from tokens) and refuses, before any query, values that no
    row can hold: out of the column's integer range, or with a NUL character
    (PostgreSQL refuses the query).
    """
    try:
        value = field.to_python(value)
    except (ValidationError, ValueError, TypeError, OverflowError):
        return None
    if value is None:
        return None
    if isinstance(value, str) and "\x00" in value:
        return None
    if isinstance(value, int):
        try:
            low, high = connection.ops.integer_field_range(field.get_internal_type())
        except KeyError:  # not an integer column
            return value
        if (low is not None and value < low) or (high is not None and value > high):
            return None
    return value


class UserQuery:
    """One round trip: users' rows, their permissions' codenames, their groups.

    Built once from the user model's metadata, so it follows a custom user
    model's table and join tables. Returns the users unsaved-but-loaded (as
    Django's ``from_db`` does) for django-sesame to check tokens against.
    Plain SQL that PostgreSQL, SQLite and MySQL/MariaDB all accept.
    """

    def __init__(self, User: Any, fields: list[str]) -> None:
        self.User = User
        self.pk = User._meta.pk
        wanted = {User._meta.get_field(name) for name in fields if name != "pk"}
        # In the model's order: from_db() expects values in that order.
        self._fields = [
            f for f in User._meta.concrete_fields if f in wanted or f is self.pk
        ]
        self.field_names = [field.attname for field in self._fields]
        self._pk_index = self._fields.index(self.pk)
        self._columns = [f.get_col(User._meta.db_table) for f in self._fields]
        self._converters = [
            connection.ops.get_db_converters(column)
            + column.get_db_converters(connection)
            for column in self._columns
        ]
        q = connection.ops.quote_name

        def columns(through, *models):
            found = []
            for model in models:
                [field] = [f for f in through._meta.fields if f.related_model is model]
                found.append(q(field.column))
            return found

        user_perms = User.user_permissions.through
        user_groups = User.groups.through
        group_perms = Group.permissions.through
        up_user, up_perm = columns(user_perms, User, Permission)
        ug_user, ug_group = columns(user_groups, User, Group)
        gp_group, gp_perm = columns(group_perms, Group, Permission)
        table = q(User._meta.db_table)
        pk = q(self.pk.column)
        permission_pk = q(Permission._meta.pk.column)
        content_type = q(Permission._meta.get_field("content_type").column)
        selected = ", ".join(f"u.{q(f.column)}" for f in self._fields)
        # The ids are filtered in each branch of the UNION too: databases do
        # not push the join's condition into it. The group branch comes first
        # so that its group id gives the column its type; its LEFT JOIN keeps
        # groups without permissions (NULL permission).
        self.sql = (
            f"SELECT {selected}, ct.{q('app_label')}, p.{q('codename')}, x.group_id "
            f"FROM {table} u "
            "LEFT JOIN ("
            f"SELECT ug.{ug_user} AS user_id, gp.{gp_perm} AS permission_id, "
            f"ug.{ug_group} AS group_id "
            f"FROM {q(user_groups._meta.db_table)} ug "
            f"LEFT JOIN {q(group_perms._meta.db_table)} gp "
            f"ON gp.{gp_group} = ug.{ug_group} "
            f"WHERE ug.{ug_user} IN (<ids>) "
            "UNION ALL "
            f"SELECT {up_user}, {up_perm}, NULL "
            f"FROM {q(user_perms._meta.db_table)} WHERE {up_user} IN (<ids>)"
            f") x ON x.user_id = u.{pk} "
            f"LEFT JOIN {q(Permission._meta.db_table)} p "
            f"ON p.{permission_pk} = x.permission_id "
            f"LEFT JOIN {q(ContentType._meta.db_table)} ct "
            f"ON ct.{q(ContentType._meta.pk.column)} = p.{content_type} "
            f"WHERE u.{pk} IN (<ids>)"
        )

    def key(self, pk: Any) -> Any:
        """A user pk as a dictionary key, whatever its form (str, int, UUID).

        None for a value that no user can have.
        """
        return field_key(self.pk, pk)

    def max_users(self) -> int:
        """Users per query: each id is a parameter three times.

        SQLite before 3.32 allows 999 parameters per query; later ones 32766
        (or what they were built with).
        """
        limit = connection.features.max_query_params
        if connection.vendor == "sqlite":
            connection.ensure_connection()
            limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        if limit is None:
            return MAX_USERS_PER_QUERY
        return max(1, min(MAX_USERS_PER_QUERY, limit // 3))

    def load(self, pk: Any) -> Loaded | None:
        """One user (see load_many), or None."""
        return self.load_many([pk]).get(self.key(pk))

    def load_many(self, pks: Iterable[Any]) -> dict[Any, Loaded]:
        """{key(pk): Loaded} for the users that exist: one query per max_users().

        Raises what the database raises, and ValueError etc. for a row that
        does not convert: callers isolate the culprit (Authenticator._load).
        """
        keys = list(dict.fromkeys(key for key in map(self.key, pks) if key is not None))
        loaded: dict[Any, Loaded] = {}
        size = self.max_users()
        for start in range(0, len(keys), size):
            loaded.update(self._load_chunk(keys[start : start + size]))
        return loaded

    def _load_chunk(self, keys: list[Any]) -> dict[Any, Loaded]:
        values = [self.pk.get_db_prep_value(key, connection) for key in keys]
        sql = self.sql.replace("<ids>", ", ".join(["%s"] * len(values)))
        with connection.cursor() as cursor:
            cursor.execute(sql, values * 3)
            rows = cursor.fetchall()
        count = len(self._fields)
        loaded: dict[Any, Loaded] = {}
        for row in rows:
            values = self._convert(row[:count])
            key = self.key(values[self._pk_index])
            found = loaded.get(key)
            if found is None:
                user = self.User.from_db(connection.alias, self.field_names, values)
                found = loaded[key] = Loaded(user, [], set())
            app_label, codename, group_id = row[count:]
            if codename is not None:
                found.codenames.append((app_label, codename))
            if group_id is not None:
                found.group_ids.add(int(group_id))
        return loaded

    def _convert(self, values: tuple) -> list:
        """Database values to Python, as the ORM would (e.g. UUIDs on SQLite)."""
        converted = list(values)
        for index, expression in enumerate(self._columns):
            for converter in self._converters[index]:
                converted[index] = converter(converted[index], expression, connection)
        return converted
