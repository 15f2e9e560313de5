"""Authentication: a django-sesame token -> an active user -> what they may see.

Synchronous Django code, run in worker threads by :mod:`wsserver.database`.
It calls django-sesame's token parser directly rather than
``django.contrib.auth.authenticate()``: that never updates last_login and
never sends ``user_login_failed``, whose arguments carry the raw token.

Cost per connection: one query, which reads the user and the codenames of
their permissions (direct and through groups) together; django-sesame then
checks the token against that user. The content type table is cached.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from sesame import settings as sesame_settings
from sesame.tokens import parse_token

from .routing import Permissions

__all__ = ["Authenticator", "Principal", "token_pk_types"]

logger = logging.getLogger("wsserver.auth")

# Permission codenames that let a user see a model's events, as in the guide.
VISIBLE_ACTIONS = ("view", "change")

# Distinct permission sets kept for sharing; past that, the cache restarts.
MAX_SHARED_PERMISSIONS = 10_000
PK_SIZES = {"int": 4, "bigint": 8, "uuid": 16}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as the server needs it."""

    user_id: str
    username: str
    permissions: Permissions
    # Changes when the password does: sesame's tokens die with it, and so do
    # the connections they opened (when INVALIDATE_ON_PASSWORD_CHANGE).
    credentials: str = ""


class ContentTypeCache:
    """(app_label, model) -> content type id, reloaded when a lookup misses."""

    RELOAD_INTERVAL = 60.0

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, app_label: str, model: str) -> int | None:
        key = (app_label, model)
        content_type_id = self._ids.get(key)
        if content_type_id is None and self._may_reload():
            self.reload()
            content_type_id = self._ids.get(key)
        return content_type_id

    def reload(self) -> None:
        ids = {
            (app_label, model): pk
            for pk, app_label, model in ContentType.objects.values_list(
                "pk", "app_label", "model"
            )
        }
        with self._lock:
            self._ids = ids
            self._loaded_at = time.monotonic()

    def _may_reload(self) -> bool:
        # A codename like "view_reports" on model "report" never matches:
        # don't reload the table for it on every authentication.
        return time.monotonic() - self._loaded_at > self.RELOAD_INTERVAL


class Authenticator:
    """Turn tokens into principals. Thread-safe; one per process."""

    def __init__(self, scope: str = "") -> None:
        self.scope = scope
        self.content_types = ContentTypeCache()
        self._permissions: dict[Permissions, Permissions] = {}
        self.User = get_user_model()
        self._fields = self._fields_to_load()
        self._query = (
            UserQuery(self.User, self._fields)
            if sesame_settings.PRIMARY_KEY_FIELD in ("pk", self.User._meta.pk.name)
            else None
        )

    def authenticate(self, token: str) -> Principal | None:
        """The principal for a valid token, or None. Database errors propagate."""
        if self._query is None:  # SESAME_PRIMARY_KEY_FIELD is not the pk
            user = parse_token(token, self._get_active_user, self.scope)
            return None if user is None else self._principal(user)
        loaded: list[tuple[Any, list[tuple[str, str]]]] = []

        def get_user(pk: Any) -> Any:
            user, codenames = self._query.load(pk)
            if user is None or not user.is_active:
                return None
            loaded.append((user, codenames))
            return user

        user = parse_token(token, get_user, self.scope)
        if user is None:
            return None
        return self._principal(user, loaded[0][1])

    def authenticate_many(self, tokens: list[str]) -> list[Principal | None]:
        """Like authenticate() for each token, with one query for all of them.

        Under load, connections waiting for a database thread are
        authenticated together: the round trip and the query planning are
        paid once per batch instead of once per connection.
        """
        if self._query is None or len(tokens) == 1:
            return [self.authenticate(token) for token in tokens]
        pks = [_token_pk(token) for token in tokens]
        loaded = self._query.load_many([pk for pk in pks if pk is not None])
        principals: list[Principal | None] = []
        for token in tokens:
            found: list[tuple[Any, list[tuple[str, str]]]] = []

            def get_user(pk: Any, found=found) -> Any:
                user, codenames = loaded.get(self._query.key(pk), (None, []))
                if user is None or not user.is_active:
                    return None
                found.append((user, codenames))
                return user

            user = parse_token(token, get_user, self.scope)
            principals.append(None if user is None else self._principal(*found[0]))
        return principals

    def reauthenticate(self, user_ids: Iterable[str]) -> dict[str, Principal | None]:
        """Recheck users whose access changed: None for those who lost it."""
        return {user_id: self._reauthenticate(user_id) for user_id in user_ids}

    def _reauthenticate(self, user_id: str) -> Principal | None:
        if self._query is not None:
            user, codenames = self._query.load(user_id)
            if user is None or not user.is_active:
                return None
            return self._principal(user, codenames)
        try:
            user = self.User._default_manager.only(*self._fields).get(pk=user_id)
        except (self.User.DoesNotExist, ValidationError, ValueError, TypeError):
            return None
        return self._principal(user) if user.is_active else None

    def group_members(self, group_id: int) -> set[str]:
        """The ids of a group's members, to recheck them when it changes."""
        through = self.User.groups.through
        [to_user] = [f for f in through._meta.fields if f.related_model is self.User]
        rows = through._default_manager.filter(group_id=group_id)
        return {str(pk) for pk in rows.values_list(to_user.attname, flat=True)}

    def _principal(
        self, user: Any, codenames: list[tuple[str, str]] | None = None
    ) -> Principal:
        credentials = ""
        if sesame_settings.INVALIDATE_ON_PASSWORD_CHANGE:
            credentials = hashlib.sha256(user.password.encode()).hexdigest()[:16]
        return Principal(
            user_id=str(user.pk),
            username=str(user.get_username()),
            permissions=self.permissions_for(user, codenames),
            credentials=credentials,
        )

    def permissions_for(
        self, user: Any, codenames: Iterable[tuple[str, str]] | None = None
    ) -> Permissions:
        """The content types whose events the user may receive."""
        if user.is_superuser:
            return self._shared(Permissions.all())
        if codenames is not None:
            return self._visible(codenames)
        # One query: SQLite refuses ORDER BY (Permission.Meta.ordering) in a UNION.
        fields = ("content_type__app_label", "codename")
        direct = Permission.objects.filter(user=user).order_by().values_list(*fields)
        via_groups = (
            Permission.objects.filter(group__user=user).order_by().values_list(*fields)
        )
        return self._visible(direct.union(via_groups))

    def _visible(self, codenames: Iterable[tuple[str, str]]) -> Permissions:
        content_type_ids = set()
        # As user.has_perm(f"{app_label}.view_{model}") would decide.
        for app_label, codename in codenames:
            action, _, model = codename.partition("_")
            if action not in VISIBLE_ACTIONS:
                continue
            content_type_id = self.content_types.get(app_label, model)
            if content_type_id is not None:
                content_type_ids.add(content_type_id)
        return self._shared(Permissions(frozenset(content_type_ids)))

    def _shared(self, permissions: Permissions) -> Permissions:
        """One object per distinct set of permissions, shared by connections."""
        if len(self._permissions) > MAX_SHARED_PERMISSIONS:
            self._permissions.clear()
        return self._permissions.setdefault(permissions, permissions)

    def _get_active_user(self, pk: Any) -> Any:
        lookup = {sesame_settings.PRIMARY_KEY_FIELD: pk}
        try:
            user = self.User._default_manager.only(*self._fields).get(**lookup)
        except (self.User.DoesNotExist, ValidationError, ValueError, TypeError):
            return None
        return user if user.is_active else None

    def _fields_to_load(self) -> list[str]:
        fields = ["password", "is_active", "is_superuser", self.User.USERNAME_FIELD]
        if sesame_settings.INVALIDATE_ON_EMAIL_CHANGE:
            fields.append(self.User.get_email_field_name())
        return fields


class UserQuery:
    """One round trip: a user's row and their permissions' codenames.

    Built once from the user model's metadata, so it follows a custom user
    model's table and join tables. Returns the user unsaved-but-loaded (as
    Django's ``from_db`` does) for django-sesame to check the token against.
    """

    def __init__(self, User: Any, fields: list[str]) -> None:
        from django.contrib.auth.models import Group

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
        selected = ", ".join(f"u.{q(f.column)}" for f in self._fields)
        self.sql = (
            f"SELECT {selected}, ct.{q('app_label')}, p.{q('codename')} "
            f"FROM {table} u "
            "LEFT JOIN ("
            f"SELECT {up_user} AS user_id, {up_perm} AS permission_id "
            f"FROM {q(user_perms._meta.db_table)} WHERE {up_user} = %s "
            "UNION "
            f"SELECT ug.{ug_user}, gp.{gp_perm} "
            f"FROM {q(user_groups._meta.db_table)} ug "
            f"JOIN {q(group_perms._meta.db_table)} gp "
            f"ON gp.{gp_group} = ug.{ug_group} "
            f"WHERE ug.{ug_user} = %s"
            f") up ON up.user_id = u.{pk} "
            f"LEFT JOIN {q(Permission._meta.db_table)} p "
            f"ON p.{q('id')} = up.permission_id "
            f"LEFT JOIN {q(ContentType._meta.db_table)} ct "
            f"ON ct.{q('id')} = p.{q('content_type_id')} "
            f"WHERE u.{pk} = %s"
        )

    def key(self, pk: Any) -> Any:
        """A user pk as a dictionary key, whatever its form (str, int, UUID)."""
        try:
            return self.pk.to_python(pk)
        except (ValidationError, ValueError, TypeError):
            return None

    def load(self, pk: Any) -> tuple[Any, list[tuple[str, str]]]:
        """(user or None, [(app_label, codename), ...])."""
        return self.load_many([pk]).get(self.key(pk), (None, []))

    def load_many(self, pks: list[Any]) -> dict[Any, tuple[Any, list]]:
        """{pk: (user, codenames)} for the users that exist, in one query."""
        keys = {key for key in map(self.key, pks) if key is not None}
        if not keys:
            return {}
        values = [self.pk.get_db_prep_value(key, connection) for key in keys]
        marks = ", ".join(["%s"] * len(values))
        sql = self.sql.replace("= %s", f"IN ({marks})")
        with connection.cursor() as cursor:
            cursor.execute(sql, values * 3)
            rows = cursor.fetchall()
        count = len(self._fields)
        loaded: dict[Any, tuple[Any, list]] = {}
        for row in rows:
            values = self._convert(row[:count])
            key = self.key(values[self._pk_index])
            if key not in loaded:
                user = self.User.from_db(connection.alias, self.field_names, values)
                loaded[key] = (user, [])
            if row[count + 1]:
                loaded[key][1].append((row[count], row[count + 1]))
        return loaded

    def _convert(self, values: tuple) -> list:
        """Database values to Python, as the ORM would (e.g. UUIDs on SQLite)."""
        converted = list(values)
        for index, expression in enumerate(self._columns):
            for converter in self._converters[index]:
                converted[index] = converter(converted[index], expression, connection)
        return converted


def _token_pk(token: str) -> Any:
    """The user pk packed in a token, without checking anything else."""
    from sesame import packers

    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return packers.packer.unpack_pk(data)[0]
    except Exception:
        return None


def token_pk_types(token: str) -> set[str]:
    """The user pk types whose packing gives a token of this length.

    A main site and a sidecar that disagree on the pk type reject every token;
    the length of a token tells which types could have made it.
    """
    if sesame_settings.PACKER is not None:
        return set()
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return set()
    overhead = sesame_settings.SIGNATURE_SIZE
    if sesame_settings.MAX_AGE is not None:
        overhead += 4
    return {pk for pk, size in PK_SIZES.items() if len(data) == size + overhead}
