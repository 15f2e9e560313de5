"""Authentication: a django-sesame token -> an active user -> what they may see.

The :class:`Authenticator` decides: which tokens are valid, which users are
active, which content types their permissions let them see. What it reads
comes from :mod:`wsserver.userquery` (the users, their permissions' codenames
and their groups, in one query) and :mod:`wsserver.contenttypes` (the cached
content type table).

Synchronous Django code, run in worker threads by :mod:`wsserver.database`.
It calls django-sesame's token parser directly rather than
``django.contrib.auth.authenticate()``: that never updates last_login and
never sends ``user_login_failed``, whose arguments carry the raw token.

Cost: one query per batch of tokens (or of users to recheck); django-sesame
then checks each token against its user. Tokens that cannot be valid (not
django-sesame's format, expired) are refused before any query. Each refusal
says why (:class:`Refused`: expired, unknown or inactive user, wrong scope,
bad signature...), for the sidecar's log; the reasons never hold the token.

Failing closed: an exception while checking one token or one user refuses
that token or user only (and is logged once, without the token); a query
that fails for a reason other than an outage is retried in halves so that
only the users who make it fail are refused. Outages (OperationalError,
InterfaceError) propagate: the caller tells clients to retry later.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from sesame import packers, tokens_v2
from sesame import settings as sesame_settings

from .contenttypes import ContentTypeCache
from .database import OUTAGES, DatabaseUnavailable
from .routing import Permissions, Principal
from .userquery import Loaded, UserQuery, field_key

__all__ = ["Authenticator", "Principal", "Refused"]

logger = logging.getLogger("wsserver.auth")

# Permission codenames that let a user see a model's events, as in the guide.
VISIBLE_ACTIONS = ("view", "change")

# Distinct permission (and group) sets kept for sharing; past that, the cache
# restarts.
MAX_SHARED_PERMISSIONS = 10_000

# Failed queries spent per batch finding the users that make a query fail;
# past that, the users not yet isolated are refused. A systematic error (a
# missing GRANT) then costs ~20 queries per batch, not one per token.
MAX_FAILED_QUERIES = 20

# Exceptions that mean "the database cannot answer now": never a refusal.
_OUTAGES = (*OUTAGES, DatabaseUnavailable)

# A user key as shown in a reason: a forged token packs what it likes.
_MAX_SHOWN_KEY = 40


@dataclasses.dataclass(frozen=True)
class Refused:
    """Why a token was refused, for the log: never the token itself.

    ``reason`` is one of: "not a django-sesame token ...", "expired ...",
    "unknown user ...", "inactive user ...", "wrong scope ...", "bad
    signature ..." or "error while checking ..." (the error is logged on its
    own, by wsserver.auth).
    """

    reason: str


class Authenticator:
    """Turn tokens into principals. Thread-safe; one per process."""

    def __init__(self, scope: str = "") -> None:
        self.scope = scope
        self.content_types = ContentTypeCache()
        self._permissions: dict[Permissions, Permissions] = {}
        self._group_ids: dict[frozenset[int], frozenset[int]] = {}
        self._codenames: dict[frozenset[str], frozenset[str]] = {}
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
        return [
            None if isinstance(result, Refused) else result
            for result in self.authenticate_explained(tokens)
        ]

    def authenticate_explained(
        self, tokens: Sequence[str]
    ) -> list[Principal | Refused]:
        """authenticate_many(), with a :class:`Refused` (why) for each refusal.

        The same single query per batch: the reasons come from the token's
        parts and the user rows already loaded (an expired token or one that
        is not django-sesame's costs no query).
        """
        refusals = _Refusals()
        try:
            keys = [self._token_key(token) for token in tokens]
            wanted = list(
                dict.fromkeys(key for key in keys if not isinstance(key, Refused))
            )
            loaded = self._load(self._load_by_token_key, wanted, refusals)
            results = [
                key
                if isinstance(key, Refused)
                else self._check_token(token, loaded, key, refusals)
                for token, key in zip(tokens, keys, strict=True)
            ]
        except _OUTAGES:
            raise
        except Exception as exc:  # a bug, not one token: refuse them all
            refusals.add(exc, ["(every one in the batch)"])
            results = [_ERROR] * len(tokens)
        refusals.log("Token refused")
        return results

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
        key = self._token_key(token)
        return None if isinstance(key, Refused) else key

    def _token_key(self, token: object) -> Any:
        """token_key(), or why the token cannot be valid (a Refused)."""
        decoded = _decode(token)
        if isinstance(decoded, Refused):
            return decoded
        user_pk, age, _signed, _signature = decoded
        if age is not None and age >= sesame_settings.MAX_AGE:
            return _expired(age)
        key = field_key(self._token_field, user_pk)
        if key is None:
            return Refused(
                f"unknown user: {self._token_field.name} {_shown(user_pk)} "
                "cannot be a user's"
            )
        return key

    def _check_token(
        self, token: str, loaded: dict[Any, Loaded], key: Any, refusals: _Refusals
    ) -> Principal | Refused:
        found = loaded.get(key)
        if found is None:
            if key in refusals.failed_keys:
                return _ERROR
            return Refused(
                f"unknown user: no user with {self._token_field.name} {_shown(key)}"
            )
        try:
            if not found.user.is_active:
                return Refused(f"inactive user {found.user.pk}")

            def get_user(user_pk: Any) -> Any:
                same = field_key(self._token_field, user_pk) == key
                return found.user if same else None

            user = tokens_v2.parse_token(token, get_user, self.scope)
            if user is None:
                return self._why_invalid(token, found.user)
            return self._principal(found)
        except _OUTAGES:
            raise
        except Exception as exc:
            refusals.add(exc, [found.user.pk], secret=token)
            return _ERROR

    def _why_invalid(self, token: str, user: Any) -> Refused:
        """Why django-sesame refused the token of a loaded, active user.

        No query: the token's parts, and its signature computed again in the
        default scope (when ours is another), which tells a token made for
        logging in (or by a site without WSSERVER_SESAME_SCOPE) from a forged
        or revoked one. A token of a third scope cannot be told from a bad
        signature without knowing that scope.
        """
        decoded = _decode(token)
        if isinstance(decoded, Refused):  # cannot happen: decoded before
            return decoded
        _user_pk, age, signed, signature = decoded
        if age is not None and age >= sesame_settings.MAX_AGE:
            return _expired(age)  # it expired while its user was loaded
        if self.scope:
            revocation_key = tokens_v2.get_revocation_key(user)
            for key in sesame_settings.VERIFICATION_KEYS:
                expected = tokens_v2.sign(
                    signed + revocation_key, key, sesame_settings.SIGNATURE_SIZE
                )
                if hmac.compare_digest(signature, expected):
                    return Refused(
                        f"wrong scope for user {user.pk}: made for the default "
                        f"scope, not WS_SESAME_SCOPE={self.scope!r}"
                    )
        return Refused(
            f"bad signature for user {user.pk} (or another scope; another "
            "SECRET_KEY or SESAME_KEY than the main site's, or revoked by a "
            "password change)"
        )

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
                    refusals.failed_keys.update(part)
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
            codenames=_share(
                self._codenames,
                frozenset(f"{app}.{codename}" for app, codename in loaded.codenames),
            ),
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


class _Refusals:
    """Exceptions that refused tokens or users, each logged once per call.

    The token never reaches the log: a line says the exception's type, its
    text (with the token masked, should it appear), where it was raised and
    for which users; no traceback (its frames could show the token).
    """

    def __init__(self) -> None:
        self._users: dict[tuple[str, str], list[str]] = {}
        # Keys whose query raised (and were left out): not unknown users.
        self.failed_keys: set[Any] = set()

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


_ERROR = Refused("error while checking (logged by wsserver.auth)")


def _decode(token: object) -> tuple[Any, int | None, bytes, bytes] | Refused:
    """A token's packed user pk, age, signed part and signature, as
    django-sesame's parse_token reads them; or why it is not such a token."""
    if not isinstance(token, str) or not tokens_v2.detect_token(token):
        return Refused("not a django-sesame token")
    try:
        data = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
        user_pk, rest = packers.packer.unpack_pk(data)
        age, signature = tokens_v2.unpack_timestamp(rest)
    except Exception:  # as django-sesame's parse_token: cannot be decoded
        signature = b""
    if len(signature) != sesame_settings.SIGNATURE_SIZE:
        return Refused(
            "not a django-sesame token (or a truncated one, or one made with "
            "other SESAME_* settings or another user pk type)"
        )
    return user_pk, age, data[: -sesame_settings.SIGNATURE_SIZE], signature


def _expired(age: int) -> Refused:
    return Refused(
        f"expired: made {age} s ago, SESAME_MAX_AGE is {sesame_settings.MAX_AGE}"
    )


def _shown(key: Any) -> str:
    """A user key for the log: repr()'d (no control characters), shortened."""
    text = repr(key)
    if len(text) > _MAX_SHOWN_KEY:
        text = text[: _MAX_SHOWN_KEY - 3] + "..."
    return text


def _origin(exc: BaseException) -> str:
    """Where an exception was raised: package/module.py:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    path = Path(frames[-1].filename)
    return f"{path.parent.name}/{path.name}:{frames[-1].lineno}"
