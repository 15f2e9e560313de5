"""The types a user model's primary key may have: WS_USER_PK's values.

Tokens pack the primary key, so the main site and the sidecar must agree on
its type. This is the one list of them, for the setting (:mod:`wsserver.config`),
the schema check (:mod:`wsserver.schema`) and the doctor's token hint
(:mod:`wsserver.tokens`). No Django: the configuration imports it first.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PK_TYPES", "PkType", "describe_pk_types"]


class PkType(NamedTuple):
    """What one WS_USER_PK value means, for each place that needs it."""

    # The Django field of such a primary key (e.g. AutoField).
    field: str
    # What Django's introspection reports for a column of this type.
    columns: tuple[str, ...]
    # The bytes django-sesame's default packer makes of it in a token.
    packed_size: int


# By WS_USER_PK value, in the order messages list them.
PK_TYPES: dict[str, PkType] = {
    "int": PkType("AutoField", ("AutoField", "IntegerField"), 4),
    "bigint": PkType("BigAutoField", ("BigAutoField", "BigIntegerField"), 8),
    "uuid": PkType("UUIDField", ("UUIDField",), 16),
}


def describe_pk_types() -> str:
    """The values with their fields, for help texts: "int (AutoField), ... or ..."."""
    named = [f"{name} ({pk_type.field})" for name, pk_type in PK_TYPES.items()]
    return f"{', '.join(named[:-1])} or {named[-1]}"
