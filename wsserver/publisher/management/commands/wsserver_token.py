"""Print a token for a user, to test the wsserver sidecar by hand.

``manage.py wsserver_token alice`` (or an email address, or a primary key)
prints a django-sesame token in WSSERVER_SESAME_SCOPE, the scope the sidecar
expects, on standard output alone: ``TOKEN=$(manage.py wsserver_token alice)``
works. What it is valid for goes to standard error.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from sesame import settings as sesame_settings

from ...conf import sesame_scope
from ...tokens import token_for

# Users listed when a name is ambiguous.
MAX_LISTED = 5


class Command(BaseCommand):
    """``manage.py wsserver_token <username, email or pk> [--by FIELD]``."""

    help = (
        "Print a token to send as the first message to the wsserver sidecar, "
        "for the user with this username, email address or primary key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="a username, email address or primary key")
        parser.add_argument(
            "--by",
            choices=["username", "email", "pk"],
            help="look the user up by this only (when a value is ambiguous)",
        )

    def handle(self, *args: Any, user: str, by: str | None, **options: Any) -> None:
        found = find_user(user, by)
        if not found.is_active:
            raise CommandError(
                f"user {describe(found)} is inactive: the sidecar refuses its "
                "tokens (set is_active to make one)"
            )
        self.stdout.write(token_for(found))
        max_age = sesame_settings.MAX_AGE
        if hasattr(max_age, "total_seconds"):
            max_age = int(max_age.total_seconds())
        lifetime = "never expires" if max_age is None else f"valid {max_age} s"
        self.stderr.write(
            f"Token for user {describe(found)} in scope {sesame_scope()!r}, "
            f"{lifetime}: send it as the first message to the sidecar."
        )


def find_user(value: str, by: str | None = None) -> Any:
    """The one user whose username, email address (case-insensitive) or
    primary key is ``value`` (only ``by``, if given); CommandError if none or
    several."""
    User = get_user_model()
    manager = User._default_manager
    lookups: dict[str, dict[str, Any]] = {"username": {User.USERNAME_FIELD: value}}
    email_field = User.get_email_field_name()
    try:
        User._meta.get_field(email_field)
    except FieldDoesNotExist:
        pass
    else:
        lookups["email"] = {f"{email_field}__iexact": value}
    with contextlib.suppress(ValidationError, ValueError, TypeError):
        lookups["pk"] = {"pk": User._meta.pk.to_python(value)}
    if by is not None:
        if by not in lookups:
            raise CommandError(
                f"{value!r} cannot be a primary key of {User._meta.label}"
                if by == "pk"
                else f"{User._meta.label} has no {email_field} field"
            )
        lookups = {by: lookups[by]}
    matches: dict[Any, Any] = {}
    for lookup in lookups.values():
        for user in manager.filter(**lookup)[: MAX_LISTED + 1]:
            matches.setdefault(user.pk, user)
    if not matches:
        raise CommandError(
            f"no user with {' or '.join(_names(lookups, User))} {value!r}"
        )
    if len(matches) > 1:
        listed = ", ".join(
            describe(user) for user in list(matches.values())[:MAX_LISTED]
        )
        raise CommandError(
            f"{value!r} is ambiguous: it matches users {listed}. Use --by "
            "username, --by email or --by pk, or give another value"
        )
    [user] = matches.values()
    return user


def describe(user: Any) -> str:
    """A user as commands show them: pk and username."""
    return f"{user.pk} ({user.get_username()})"


def _names(lookups: dict[str, dict[str, Any]], User: Any) -> list[str]:
    names = {
        "username": User.USERNAME_FIELD,
        "email": User.get_email_field_name(),
        "pk": "primary key",
    }
    return list(dict.fromkeys(names[by] for by in lookups))
