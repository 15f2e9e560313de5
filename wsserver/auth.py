"""Authentication: a django-sesame token -> an active user -> what they may see.

Synchronous Django code, run in worker threads by :mod:`wsserver.database`.
It calls django-sesame's token parser directly rather than
``django.contrib.auth.authenticate()``: that never updates last_login and
never sends ``user_login_failed``, whose arguments carry the raw token.

Cost: one query per batch of tokens (or of users to recheck), which reads
the users, the codenames of their permissions (direct and through groups)
and their groups together; django-sesame then checks each token against its
user. Tokens that cannot be valid (not django-sesame's format, expired) are
refused before any query. The content type table is cached.

Failing closed: an exception while checking one token or one user refuses
that token or user only (and is logged once, without the token); a query
that fails for a reason other than an outage is retried in halves so that
only the users who make it fail are refused. Outages (OperationalError,
InterfaceError) propagate: the caller tells clients to retry later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from sesame import packers, tokens_v2
from sesame import settings as sesame_settings

from .database import OUTAGES, DatabaseUnavailable
from .routing import Permissions, Principal

__all__ = ["Authenticator", "Loaded", "Principal", "UserQuery", "token_pk_types"]

logger = logging.getLogger("wsserver.auth")

# Permission codenames that let a user see a model's events, as in the guide.
VISIBLE_ACTIONS = ("view", "change")

# Distinct permission (and group) sets kept for sharing; past that, the cache
# restarts.
MAX_SHARED_PERMISSIONS = 10_000
PK_SIZES = {"int": 4, "bigint": 8, "uuid": 16}

# Users read by one query (the Batcher sends up to 500 tokens at once).
MAX_USERS_PER_QUERY = 500
# Failed queries spent per batch finding the users that make a query fail;
# past that, the users not yet isolated are refused. A systematic error (a
# missing GRANT) then costs ~20 queries per batch, not one per token.
MAX_FAILED_QUERIES = 20

# Exceptions that mean "the database cannot answer now": never a refusal.
_OUTAGES = (*OUTAGES, DatabaseUnavailable)


class Loaded(NamedTuple):
    """A user as UserQuery reads them: the row and what it gives access to."""

    user: Any
    # (app_label, codename) of each permission, direct or through a group.
    codenames: list[tuple[str, str]]
    group_ids: set[int]


class ContentTypeCache:
    """(app_label, model) -> content type id, reloaded when a lookup misses."""

    RELOAD_INTERVAL = 60.0

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, app_label: str, model: str) -> int | None:
        """The id of a content type, or None if there is no such model."""
        key = (app_label, model)
        content_type_id = self._ids.get(key)
        if content_type_id is None and self._may_reload():
            self.reload()
            content_type_id = self._ids.get(key)
        return content_type_id

    def reload(self) -> None:
        """Read the whole content type table (a few hundred rows at most)."""
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
        self._group_ids: dict[frozenset[int], frozenset[int]] = {}
        self.User = get_user_model()
        # The field tokens pack: the pk, or SESAME_PRIMARY_KEY_FIELD.
        field_name = sesame_settings.PRIMARY_KEY_FIELD
        self._by_pk = field_name in ("pk", self.User._meta.pk.name)
        self._token_field = (
            self.User._meta.pk if self._by_pk else self.User._meta.get_field(field_name)
        )
        self._fields = self._fields_to_load()
        self._query = UserQuery(self.User, self._fields)

    # Tokens

    def authenticate(self, token: str) -> Principal | None:
        """The principal for a valid token, or None. Outages propagate."""
        return self.authenticate_many([token])[0]

    def authenticate_many(self, tokens: Sequence[str]) -> list[Principal | None]:
        """Like authenticate() for each token, with one query for all of them.

        Under load, connections waiting for a database thread are
        authenticated together: the round trip and the query planning are
        paid once per batch instead of once per connection. Whatever goes
        wrong for one token (or its user) refuses that token only.
        """
        refusals = _Refusals()
        try:
            keys = [self.token_key(token) for token in tokens]
            wanted = list(dict.fromkeys(key for key in keys if key is not None))
            loaded = self._load(self._load_by_token_key, wanted, refusals)
            principals = [
                None if key is None else self._check_token(token, loaded, key, refusals)
                for token, key in zip(tokens, keys, strict=True)
            ]
        except _OUTAGES:
            raise
        except Exception as exc:  # a bug, not one token: refuse them all
            refusals.add(exc, ["(every one in the batch)"])
            principals = [None] * len(tokens)
        refusals.log("Token refused")
        return principals

    def token_key(self, token: object) -> Any:
        """The user key a token packs, if it may be valid; else None.

        A check without any query: the token must be a django-sesame (v2)
        token as this configuration makes them (base64url, packed primary
        key, timestamp, signature size), not expired (SESAME_MAX_AGE), and
        pack a key that a user may have. django-sesame checks all this again,
        and the signature, once the user is loaded. Older v1 tokens (with a
        colon) are refused: they support no scope and their parser logs
        tokens.
        """
        if not isinstance(token, str) or not tokens_v2.detect_token(token):
            return None
        try:
            data = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
            user_pk, rest = packers.packer.unpack_pk(data)
            age, signature = tokens_v2.unpack_timestamp(rest)
        except Exception:  # as django-sesame's parse_token: cannot be decoded
            return None
        if len(signature) != sesame_settings.SIGNATURE_SIZE:
            return None
        if age is not None and age >= sesame_settings.MAX_AGE:
            return None
        return field_key(self._token_field, user_pk)

    def _check_token(
        self, token: str, loaded: dict[Any, Loaded], key: Any, refusals: _Refusals
    ) -> Principal | None:
        found = loaded.get(key)
        if found is None:
            return None
        try:
            if not found.user.is_active:
                return None

            def get_user(user_pk: Any) -> Any:
                same = field_key(self._token_field, user_pk) == key
                return found.user if same else None

            user = tokens_v2.parse_token(token, get_user, self.scope)
            return None if user is None else self._principal(found)
        except _OUTAGES:
            raise
        except Exception as exc:
            refusals.add(exc, [found.user.pk], secret=token)
            return None

    def _load_by_token_key(self, keys: list[Any]) -> dict[Any, Loaded]:
        if self._by_pk:
            return self._query.load_many(keys)
        # SESAME_PRIMARY_KEY_FIELD is another unique field: find the pks,
        # then load by pk (two queries per batch).
        field = self._token_field
        rows = self.User._default_manager.filter(
            **{f"{field.name}__in": keys}
        ).values_list(field.name, "pk")
        pks: dict[Any, Any] = {}
        ambiguous = set()
        for value, pk in rows:
            key = field_key(field, value)
            if key in pks:  # not unique in the database: whose token is it?
                ambiguous.add(key)
            pks[key] = pk
        for key in ambiguous:
            logger.warning(
                "Token refused: %s %r is not unique in the database",
                field.name,
                key,
            )
        for key in {None, *ambiguous}:
            pks.pop(key, None)
        by_pk = self._query.load_many(list(pks.values()))
        loaded = {}
        for key, pk in pks.items():
            found = by_pk.get(self._query.key(pk))
            # Unchanged between the two queries, or refused.
            if found is not None and (
                field_key(field, getattr(found.user, field.attname)) == key
            ):
                loaded[key] = found
        return loaded

    # Rechecks

    def reauthenticate(self, user_ids: Iterable[str]) -> dict[str, Principal | None]:
        """Recheck users whose access changed: None for those who lost it.

        One query per 500 users. Returns an entry for every id given, keyed
        as given; None for users who are gone, inactive, or whose check
        raised (fail closed: they reconnect and authenticate again). Only
        outages propagate.
        """
        ids = list(dict.fromkeys(user_ids))
        refusals = _Refusals()
        try:
            keys = {user_id: self._query.key(user_id) for user_id in ids}
            wanted = list(dict.fromkeys(k for k in keys.values() if k is not None))
            loaded = self._load(self._query.load_many, wanted, refusals)
            principals = {
                user_id: self._check_user(loaded.get(key), refusals)
                for user_id, key in keys.items()
            }
        except _OUTAGES:
            raise
        except Exception as exc:  # a bug: no user keeps access on a doubt
            refusals.add(exc, ["(every one rechecked)"])
            principals = dict.fromkeys(ids)
        refusals.log("Access refused on recheck")
        return principals

    def _check_user(
        self, found: Loaded | None, refusals: _Refusals
    ) -> Principal | None:
        if found is None:
            return None
        try:
            return self._principal(found) if found.user.is_active else None
        except _OUTAGES:
            raise
        except Exception as exc:
            refusals.add(exc, [found.user.pk])
            return None

    # Loading, isolating failures

    def _load(
        self,
        load: Callable[[list[Any]], dict[Any, Loaded]],
        keys: list[Any],
        refusals: _Refusals,
    ) -> dict[Any, Loaded]:
        """load() by chunks of one query, without the keys that make it fail.

        A query that raises for another reason than an outage (a DataError
        for one row...) is retried in halves, down to the keys that make it
        fail, which are left out (refused) and logged.
        """
        failures_left = MAX_FAILED_QUERIES

        def attempt(part: list[Any]) -> dict[Any, Loaded]:
            nonlocal failures_left
            try:
                return load(part)
            except _OUTAGES:
                raise
            except Exception as exc:
                failures_left -= 1
                if len(part) == 1 or failures_left <= 0:
                    refusals.add(exc, part)
                    return {}
            middle = len(part) // 2
            return {**attempt(part[:middle]), **attempt(part[middle:])}

        size = self._query.max_users()
        loaded: dict[Any, Loaded] = {}
        for start in range(0, len(keys), size):
            loaded.update(attempt(keys[start : start + size]))
        return loaded

    # Principals

    def _principal(self, loaded: Loaded) -> Principal:
        user = loaded.user
        return Principal(
            user_id=str(user.pk),
            username=str(user.get_username()),
            permissions=self.permissions_for(user, loaded.codenames),
            credentials=self.credentials(user),
            group_ids=_share(self._group_ids, frozenset(loaded.group_ids)),
        )

    def credentials(self, user: Any) -> str:
        """A digest of what django-sesame signs tokens with, besides the pk.

        Raises when django-sesame cannot compute it (e.g. a NULL email under
        SESAME_INVALIDATE_ON_EMAIL_CHANGE): such a user cannot log in.
        """
        return hashlib.blake2b(
            tokens_v2.get_revocation_key(user),
            digest_size=16,
            # The same in every process with the same SECRET_KEY and SESAME_KEY.
            key=sesame_settings.SIGNING_KEY,
            person=b"wsserver.creds",
        ).hexdigest()

    def permissions_for(
        self, user: Any, codenames: Iterable[tuple[str, str]] | None = None
    ) -> Permissions:
        """The content types whose events the user may receive."""
        if user.is_superuser:
            return _share(self._permissions, Permissions.all())
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
        return _share(self._permissions, Permissions(frozenset(content_type_ids)))

    def _fields_to_load(self) -> list[str]:
        """The user fields that authentication reads: no other is ever loaded.

        Reading a field that was not loaded would cost a query per user.
        """
        fields = ["password", "is_active", "is_superuser", self.User.USERNAME_FIELD]
        if sesame_settings.INVALIDATE_ON_EMAIL_CHANGE:
            fields.append(self.User.get_email_field_name())
        if sesame_settings.ONE_TIME:  # refused by wsserver.config, but exact
            fields.append("last_login")
        if not self._by_pk:
            fields.append(self._token_field.name)
        return list(dict.fromkeys(fields))


def _share(cache: dict, value: Any) -> Any:
    """One object per distinct value, shared by the connections that have it."""
    if len(cache) > MAX_SHARED_PERMISSIONS:
        cache.clear()
    return cache.setdefault(value, value)


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


class _Refusals:
    """Exceptions that refused tokens or users, each logged once per call.

    The token never reaches the log: a line says the exception's type, its
    text (with the token masked, should it appear), where it was raised and
    for which users; no traceback (its frames could show the token).
    """

    def __init__(self) -> None:
        self._users: dict[tuple[str, str], list[str]] = {}

    def add(
        self, exc: BaseException, users: Iterable[object], secret: str = ""
    ) -> None:
        text = str(exc)
        if secret:
            text = text.replace(secret, "<token>")
        error = f"{type(exc).__name__}: {text}"[:300]
        self._users.setdefault((error, _origin(exc)), []).extend(map(str, users))

    def log(self, refused: str) -> None:
        """One warning per distinct exception, e.g. refused="Token refused"."""
        for (error, origin), users in self._users.items():
            shown = ", ".join(users[:10])
            if len(users) > 10:
                shown += f" and {len(users) - 10} more"
            logger.warning(
                "%s for user %s: checking raised %s (at %s)",
                refused,
                shown,
                error,
                origin,
            )


def _origin(exc: BaseException) -> str:
    """Where an exception was raised: package/module.py:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    path = Path(frames[-1].filename)
    return f"{path.parent.name}/{path.name}:{frames[-1].lineno}"


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
