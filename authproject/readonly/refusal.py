"""The one answer for every command that would change the shared database."""

import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError

MESSAGE = (
    "wsserver never changes the main site's database: the main site owns its "
    "schema and data. Run migrations from the main site (manage.py migrate)."
)


class RefusingCommand(BaseCommand):
    help = MESSAGE

    def run_from_argv(self, argv: list[str]) -> NoReturn:
        # Before argument parsing, so that any of the real command's options
        # get this message rather than a usage error.
        sys.stderr.write(f"CommandError: {MESSAGE}\n")
        sys.exit(1)

    def execute(self, *args: Any, **options: Any) -> NoReturn:
        raise CommandError(MESSAGE)
