"""The one answer for every command that could change the shared database.

The stripped-down project exists to verify tokens. Every management command
that writes (to the database, or files, or mail) is overridden by a module
of this app's ``management/commands`` that imports :class:`RefusingCommand`;
tests/test_readonly.py checks that each command Django offers is either one
of those or known to be read-only.
"""

import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError

MESSAGE = (
    "wsserver never changes the main site's database: the main site owns its "
    "schema and data. Run this command on the main site (manage.py), not with "
    "the sidecar's settings."
)


class RefusingCommand(BaseCommand):
    help = MESSAGE
    # Django's system check "commands.W001" compares makemigrations' and
    # migrate's autodetector: without one, every command that runs the checks
    # (check, dumpdata, inspectdb...) crashed with AttributeError.
    autodetector = None

    def run_from_argv(self, argv: list[str]) -> NoReturn:
        # Before argument parsing, so that any of the real command's options
        # get this message rather than a usage error.
        command = argv[1] if len(argv) > 1 else "this command"
        sys.stderr.write(f"CommandError: {command} is refused. {MESSAGE}\n")
        sys.exit(1)

    def execute(self, *args: Any, **options: Any) -> NoReturn:
        raise CommandError(MESSAGE)
