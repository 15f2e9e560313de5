"""Checks that the shared database has what the sidecar's user model reads.

A main site and a sidecar that disagree on the user table, its columns or the
type of its primary key reject every token without saying why: these checks
say it at start-up instead, in one line per problem with its fix.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.utils import Error as DatabaseError

from .pktypes import PK_TYPES

__all__ = ["check_user_schema", "permission_denied", "pk_types_for_column"]

# MySQL and MariaDB error codes for a missing privilege: on a table, a column,
# the database, or a statement. mysqlclient raises them as OperationalError.
MYSQL_ACCESS_DENIED = {1044, 1142, 1143, 1227}
# PostgreSQL's SQLSTATE for insufficient_privilege.
PG_INSUFFICIENT_PRIVILEGE = "42501"

# What Django's introspection reports for a primary key column, by pk type.
INTROSPECTED_PK_TYPES = {
    column: {name} for name, pk_type in PK_TYPES.items() for column in pk_type.columns
}


def pk_types_for_column(field_type: str, vendor: str) -> set[str]:
    """The WS_USER_PK values compatible with an introspected pk column."""
    if vendor == "sqlite":
        # SQLite stores AutoField and BigAutoField alike, and UUIDs as char(32).
        if field_type in {"AutoField", "IntegerField", "BigIntegerField"}:
            return {"int", "bigint"}
        if field_type == "CharField":
            return {"uuid"}
    if vendor == "mysql" and field_type == "CharField":
        return {"uuid"}
    return INTROSPECTED_PK_TYPES.get(field_type, set())


def permission_denied(exc: BaseException) -> bool:
    """Whether a database error says the role lacks a privilege (a GRANT),
    rather than that the table is missing or the server unreachable."""
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        if getattr(error, "sqlstate", None) == PG_INSUFFICIENT_PRIVILEGE:
            return True  # psycopg
        if getattr(error, "pgcode", None) == PG_INSUFFICIENT_PRIVILEGE:
            return True  # psycopg2
        code = error.args[0] if error.args else None
        if isinstance(code, int) and code in MYSQL_ACCESS_DENIED:
            return True  # mysqlclient
    return "permission denied" in str(exc).lower()


def _table_description(cursor, table: str) -> list | None:
    """The columns of ``table``, or None if this role may not read it (the
    doctor's unreadable_tables names the GRANT to run)."""
    try:
        return connection.introspection.get_table_description(cursor, table)
    except DatabaseError as exc:
        if permission_denied(exc):
            return None
        raise


def _denied(cursor, table: str) -> bool:
    """Whether reading ``table`` is refused for lack of a privilege.

    MySQL and MariaDB list only the tables a role has a privilege on: a table
    without one looks missing, and SELECT tells.
    """
    try:
        cursor.execute(f"SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT 1")
    except DatabaseError as exc:
        return permission_denied(exc)
    return False


def check_user_schema(pk_type: str, pk_variable: str = "WS_USER_PK") -> list[str]:
    """Problems with the user tables, each with its fix. Queries the database.

    Tables this role may not read are left out: the doctor names the GRANT
    to run for each (wsserver.doctor.unreadable_tables).
    """
    User = get_user_model()
    table = User._meta.db_table
    problems: list[str] = []
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        if table not in tables:
            if _denied(cursor, table):
                return []
            return [
                f"user table {table!r} does not exist in the database: set "
                "DATABASE_URL to the main site's database and, for a custom user "
                "model, WS_USER_TABLE to its table"
            ]
        description = _table_description(cursor, table)
        if description is None:
            return []
        columns = {info.name: info for info in description}
        for field in User._meta.concrete_fields:
            if field.column not in columns:
                problems.append(
                    f"column {table}.{field.column} is missing: the user model "
                    "must have it (set WS_USERNAME_FIELD / WS_USER_EMAIL_FIELD "
                    "to the main site's field names)"
                )
        pk_column = User._meta.pk.column
        if pk_column in columns:
            info = columns[pk_column]
            field_type = connection.introspection.get_field_type(info.type_code, info)
            if isinstance(field_type, tuple):
                field_type = field_type[0]
            compatible = pk_types_for_column(field_type, connection.vendor)
            if compatible and pk_type not in compatible:
                problems.append(
                    f"{table}.{pk_column} is a {field_type} but {pk_variable}="
                    f"{pk_type}: every token would be rejected. Set {pk_variable}="
                    f"{' or '.join(t for t in PK_TYPES if t in compatible)}"
                )
        for field in User._meta.many_to_many:
            through = field.remote_field.through._meta
            if through.db_table not in tables:
                if _denied(cursor, through.db_table):
                    continue
                problems.append(
                    f"table {through.db_table!r} ({field.name}) does not exist: "
                    "set WS_USER_TABLE to the main site's user table"
                )
                continue
            description = _table_description(cursor, through.db_table)
            if description is None:
                continue
            through_columns = {info.name for info in description}
            for through_field in through.concrete_fields:
                if through_field.column not in through_columns:
                    problems.append(
                        f"column {through.db_table}.{through_field.column} is "
                        "missing: set WS_USER_MODEL_NAME to the class name of the "
                        "main site's user model"
                    )
    return problems
