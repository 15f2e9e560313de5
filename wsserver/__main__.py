"""Command line: ``python -m wsserver`` serves; ``--help`` lists every setting."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import sys
import textwrap
from typing import TextIO

from . import __version__
from .config import SETTINGS, Config, ConfigError, get_config
from .logs import configure_logging

__all__ = ["main"]

logger = logging.getLogger("wsserver")


def settings_help() -> str:
    """Every setting, grouped, with its default: the --help epilog."""
    lines = ["settings (environment variables):"]
    group = None
    for setting in SETTINGS:
        if setting.group != group:
            group = setting.group
            lines.append(f"\n  {group}:")
        if setting.default is None:
            lines.append(f"    {setting.name} (required)")
        else:
            lines.append(f"    {setting.name} (default: {setting.default!r})")
        lines.extend(
            textwrap.wrap(
                setting.help,
                width=76,
                initial_indent=" " * 8,
                subsequent_indent=" " * 8,
            )
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (``sys.argv`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(
        prog="python -m wsserver",
        description=(
            "WebSocket notification sidecar for Django: authenticates browsers "
            "with django-sesame tokens against the main site's database and "
            "pushes the main site's admin events from Redis to the users "
            "allowed to see them. Configured by environment variables only."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check"],
        help="serve (the default): run the server; check: verify the "
        "configuration, the database tables and Redis without serving",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="with check: say whether this token verifies here, for whom, "
        "and which models' events that user would receive. `--token -`, or "
        "--token last with no value, reads the token from standard input (one "
        "line), which keeps it out of `ps` and the shell's history: e.g. "
        "`python -m wsserver check --token < token.txt`",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print wsserver's version (and Django's and Python's) and exit",
    )
    arguments = parser.parse_args(_token_joined(sys.argv[1:] if argv is None else argv))
    if arguments.token is not None and arguments.command != "check":
        parser.error("--token goes with check: python -m wsserver check --token TOKEN")
    return arguments


def version_line() -> str:
    """What ``--version`` prints, e.g. ``wsserver 0.1.0 (Django 5.2.8, Python
    3.11.9)``: the sidecar's Django may differ from the main site's."""
    import django

    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"wsserver {__version__} (Django {django.get_version()}, Python {python})"


# The --token value that means "read it from standard input".
STDIN = "-"


def _token_joined(argv: list[str]) -> list[str]:
    """``--token X`` as ``--token=X``: a token may start with "-" (base64url),
    which argparse would take for an option. A last ``--token`` with no value
    is ``--token=-``: read from standard input."""
    joined = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--token":
            value = next(arguments, STDIN)
            joined.append(f"--token={value}")
        else:
            joined.append(argument)
    return joined


def read_token(stream: TextIO | None = None) -> str:
    """The token for ``check --token -``: one line of standard input, stripped.

    On a terminal it is asked for without echo. Raises ValueError, naming
    --token, when there is none.
    """
    stream = sys.stdin if stream is None else stream
    if stream.isatty():
        token = getpass.getpass("Token (not echoed): ", stream=sys.stderr)
    else:
        token = stream.readline()
    token = token.strip()
    if not token:
        raise ValueError(
            "--token -: no token on standard input; pipe one in (one line), "
            "or give it as --token TOKEN"
        )
    return token


def setup_django() -> None:
    """Load the stripped-down project (settings_auth) on the shared database."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings_auth"
    import django

    django.setup()


def main(argv: list[str] | None = None) -> int:
    """Serve or check, as the command line says; return the exit status.

    An invalid configuration, or ``--token -`` with no token on standard
    input, gives 2 before logging and Django are set up.
    """
    arguments = parse_args(argv)
    token = arguments.token
    if token == STDIN:
        try:
            token = read_token()
        except ValueError as exc:
            print(f"wsserver: {exc}", file=sys.stderr)
            return 2
    try:
        config = get_config()
    except ConfigError as exc:
        return invalid_configuration(exc.problems)
    configure_logging(config.log_level, config.log_format)
    setup_django()
    if arguments.command == "check":
        from .doctor import check

        return check(config, token)
    return serve(config)


def invalid_configuration(problems: list[str]) -> int:
    """Say what is wrong with the environment; the exit status (2)."""
    print("wsserver: invalid configuration:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print("Run python -m wsserver --help for every setting.", file=sys.stderr)
    return 2


def serve(config: Config) -> int:
    """Check the user tables, then serve (in ``WS_WORKERS`` processes if more
    than one) until stopped; return the exit status.

    A database that is down at start-up is not fatal: clients are told to try
    again until it answers. User tables that do not match the configuration
    are: the exit status is 1.
    """
    from django.db import connections
    from django.db.utils import Error as DatabaseError

    from .auth import Authenticator
    from .database import Database
    from .schema import check_user_schema
    from .server import Sidecar

    logger.info(
        "Configuration: %s",
        ", ".join(f"{name}={value!r}" for name, value in config.summary().items()),
    )
    pk_type = config.user_model.pk_type if config.user_model.custom else "int"
    try:
        problems = check_user_schema(pk_type)
    except DatabaseError as exc:
        logger.warning(
            "Database unavailable at start-up (%s): connections will be told "
            "to try again later until it answers",
            str(exc).strip(),
        )
    else:
        if problems:
            connections.close_all()
            for problem in problems:
                logger.error("%s", problem)
            logger.error("The user tables do not match the configuration: exiting")
            return 1
        from .doctor import unreadable_tables

        # Served anyway: a GRANT may be added while it runs.
        for problem in unreadable_tables(config):
            logger.error("%s: authentications will fail until then", problem)
        connections.close_all()

    from .doctor import startup_redis_problem

    redis_problem = startup_redis_problem(config)
    if redis_problem:
        logger.error("%s: exiting", redis_problem)
        return 1

    def run(worker: int = 0) -> int:
        worker_config = config
        if config.metrics_port:
            # Each worker counts its own clients: worker n serves its metrics
            # on WS_METRICS_PORT + n, one Prometheus target per worker.
            worker_config = dataclasses.replace(
                config, metrics_port=config.metrics_port + worker
            )
        database = Database(config.db_threads)
        sidecar = Sidecar(worker_config, Authenticator(config.sesame_scope), database)
        try:
            asyncio.run(sidecar.run())
        finally:
            database.close()
        return 0

    if config.workers > 1:
        from .workers import run_workers

        if not config.metrics_port:
            logger.warning(
                "WS_WORKERS=%d without WS_METRICS_PORT: each GET /metrics on "
                "WS_PORT reaches one worker at random and shows only its "
                "numbers; set WS_METRICS_PORT to scrape each worker",
                config.workers,
            )
        # Time for every worker's shutdown (WS_SHUTDOWN_TIMEOUT, then the
        # aborts and the closing of Redis and the database) before a kill.
        return run_workers(
            config.workers, run, stop_timeout=config.shutdown_timeout + 10
        )
    return run()


if __name__ == "__main__":
    sys.exit(main())
