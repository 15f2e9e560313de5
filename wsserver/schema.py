"""Checks that the shared database has what the sidecar's user model reads.

A main site and a sidecar that disagree on the user table, its columns or the
type of its primary key reject every token without saying why: these checks
say it at start-up instead, in one line per problem with its fix.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection

from .pktypes import PK_TYPES

__all__ = ["check_user_schema", "pk_types_for_column"]

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


def check_user_schema(pk_type: str, pk_variable: str = "WS_USER_PK") -> list[str]:
    """Problems with the user tables, each with its fix. Queries the database."""
    User = get_user_model()
    table = User._meta.db_table
    problems: list[str] = []
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        if table not in tables:
            return [
                f"user table {table!r} does not exist in the database: set "
                "DATABASE_URL to the main site's database and, for a custom user "
                "model, WS_USER_TABLE to its table"
            ]
        columns = {
            info.name: info
            for info in connection.introspection.get_table_description(cursor, table)
        }
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
                problems.append(
                    f"table {through.db_table!r} ({field.name}) does not exist: "
                    "set WS_USER_TABLE to the main site's user table"
                )
                continue
            through_columns = {
                info.name
                for info in connection.introspection.get_table_description(
                    cursor, through.db_table
                )
            }
            for through_field in through.concrete_fields:
                if through_field.column not in through_columns:
                    problems.append(
                        f"column {through.db_table}.{through_field.column} is "
                        "missing: set WS_USER_MODEL_NAME to the class name of the "
                        "main site's user model"
                    )
    return problems
