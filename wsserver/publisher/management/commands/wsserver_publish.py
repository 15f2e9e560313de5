"""Publish an app event from the command line, as ``publish()`` does.

``manage.py wsserver_publish EVENT [--data JSON] [--user PK_OR_USERNAME]
[--group NAME] [--permission APP_LABEL.CODENAME] [--model APP_LABEL.MODEL]``;
each audience option may be given several times (``--user alice --user 7``),
anywhere on the line. It exits with an error if the arguments are wrong or
the event could not be sent to Redis (unlike ``publish()``, which only logs).
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ...api import prepare
from ...publishing import send


class Command(BaseCommand):
    """``manage.py wsserver_publish EVENT [--data JSON] [--user ...] ...``."""

    help = (
        "Publish an app event to users, groups, permissions or models, as the "
        "site's publish() does; each option may be repeated."
    )

    def add_arguments(self, parser):
        parser.add_argument("event", help="the event's name, e.g. export.ready")
        parser.add_argument(
            "--data",
            default="null",
            metavar="JSON",
            help="the event's data, as JSON (default: null), e.g. '{\"n\": 1}'",
        )
        parser.add_argument(
            "--user",
            dest="users",
            action="append",
            default=[],
            metavar="PK_OR_USERNAME",
            help="a recipient: a username, or else a user's primary key",
        )
        parser.add_argument(
            "--group",
            dest="groups",
            action="append",
            default=[],
            metavar="NAME",
            help="a group's name: its members receive the event",
        )
        parser.add_argument(
            "--permission",
            dest="permissions",
            action="append",
            default=[],
            metavar="APP_LABEL.CODENAME",
            help="users with this permission (and superusers) receive the event",
        )
        parser.add_argument(
            "--model",
            dest="models",
            action="append",
            default=[],
            metavar="APP_LABEL.MODEL",
            help="users who may view or change this model receive the event",
        )

    def handle(self, *args, event, data, users, groups, permissions, models, **kw):
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise CommandError(f"--data is not JSON: {exc}") from None
        try:
            message = prepare(
                event,
                value,
                users=[self.user_pk(user) for user in users],
                groups=groups,
                permissions=permissions,
                models=models,
            )
        except (TypeError, ValueError) as exc:
            raise CommandError(self.options_named(str(exc))) from None
        if not send([message]):
            raise CommandError(
                "the event could not be published: see the wsserver.publisher log"
            )
        if kw.get("verbosity", 1) >= 1:
            self.stdout.write(f"published {event!r} to {message.audience}")

    def user_pk(self, username_or_pk: str):
        """The pk of the user with this username, or else with this pk."""
        User = get_user_model()
        manager = User._default_manager
        pk = manager.filter(**{User.USERNAME_FIELD: username_or_pk}).values_list(
            "pk", flat=True
        )
        for found in pk:
            return found
        try:
            pk = User._meta.pk.to_python(username_or_pk)
        except ValidationError:
            pk = None
        if pk is not None and manager.filter(pk=pk).exists():
            return pk
        raise CommandError(
            f"--user {username_or_pk}: no user with this {User.USERNAME_FIELD} or pk"
        )

    @staticmethod
    def options_named(message: str) -> str:
        """publish()'s error, naming the command's options, not its arguments."""
        for argument, option in [
            ("users", "--user"),
            ("groups", "--group"),
            ("permissions", "--permission"),
            ("models", "--model"),
            ("data", "--data"),
        ]:
            if message.startswith(f"{argument} "):
                return f"{option}: {message}"
        if message.startswith("no audience"):
            return "no audience: give --user, --group, --permission or --model"
        return message
