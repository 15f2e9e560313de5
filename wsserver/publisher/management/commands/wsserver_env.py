"""Print the environment the wsserver sidecar needs to work with this site.

Run it on the main site; paste the output into the sidecar's systemd unit,
container environment or Kubernetes manifest. Secrets (SECRET_KEY and its
fallbacks, the database password, the Redis password and any secret
parameter of the Redis URL, SESAME_KEY) are masked unless --show-secrets is
given.

The output is an environment file (``NAME=value`` lines, shell-quoted, and
``#`` comments), with two lines to edit, as its comments and a warning on
standard error say: DATABASE_URL is the site's own login, to replace with
the sidecar's read-only role, and the Redis URL is the site's (the
publisher's), given as WS_REDIS_URL, which wins over a REDIS_URL that the
site itself may use in the same environment (for its cache).
"""

from __future__ import annotations

import shlex
import urllib.parse
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from sesame import settings as sesame_settings

from ....logs import mask_url
from ...conf import channel, history_size, redis_url, sesame_scope

MASK = "********"
# By the backend's vendor, the databases the sidecar can open read-only:
# PostGIS is given as postgresql:// and SpatiaLite as sqlite://, which the
# sidecar opens with the plain backends (it reads no geometry: no GDAL needed).
SCHEMES = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
}
PK_TYPES = {
    "AutoField": "int",
    "IntegerField": "int",
    "BigAutoField": "bigint",
    "BigIntegerField": "bigint",
    "UUIDField": "uuid",
}


class Command(BaseCommand):
    """``manage.py wsserver_env [--show-secrets] [--database ALIAS]``."""

    help = "Print the environment variables the wsserver sidecar needs for this site."

    def add_arguments(self, parser):
        parser.add_argument(
            "--show-secrets",
            action="store_true",
            help="print SECRET_KEY, the database and Redis passwords and "
            "SESAME_KEY as is",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, show_secrets: bool, database: str, **options):
        """Print one ``NAME=value`` line per variable, shell-quoted."""

        def secret(value: str) -> str:
            return value if show_secrets or not value else MASK

        vendor = connections[database].vendor
        env = {
            "DATABASE_URL": database_url(
                vendor, connections[database].settings_dict, secret
            ),
            "SECRET_KEY": secret(settings.SECRET_KEY),
            "SECRET_KEY_FALLBACKS": secret(
                ",".join(getattr(settings, "SECRET_KEY_FALLBACKS", []))
            ),
            "WS_REDIS_URL": (
                redis_url() if show_secrets else mask_url(redis_url(), MASK)
            ),
            "WS_CHANNEL": channel(),
            "WS_SESAME_SCOPE": sesame_scope(),
            "WS_HISTORY_SIZE": str(history_size()),
            **sesame_env(secret),
            **user_model_env(),
        }
        if not show_secrets:
            self.stdout.write(
                "# Secrets are masked: run with --show-secrets to print them."
            )
        notes = {
            "DATABASE_URL": database_note(vendor),
            "WS_REDIS_URL": REDIS_NOTE,
        }
        for name, value in env.items():
            for line in notes.get(name, ()):
                self.stdout.write(f"# {line}")
            self.stdout.write(f"{name}={shlex.quote(value)}")
        if vendor != "sqlite":
            # Seen even when the output goes to a file.
            self.stderr.write(
                "wsserver_env: DATABASE_URL is this site's own database login: "
                "replace it with the sidecar's read-only role (see the README's "
                '"A read-only database role").'
            )


REDIS_NOTE = (
    "The main site's WSSERVER_REDIS_URL. WS_REDIS_URL wins over REDIS_URL, which",
    "the site may use for itself (e.g. its cache): set this one. With Redis ACLs,",
    "give the sidecar's user instead (docs/redis.md).",
)


def database_note(vendor: str) -> tuple[str, ...]:
    """The comment lines printed above DATABASE_URL."""
    if vendor == "sqlite":
        return ("The site's SQLite file: the sidecar opens it read-only (mode=ro).",)
    return (
        "EDIT: this is the main site's own login. Put the sidecar's read-only role",
        'here instead (README: "A read-only database role"): the sidecar opens',
        "its sessions read-only too, but a role that may write is one bug away",
        "from writing.",
    )


def database_url(vendor: str, database: dict, secret: Callable[[str], str]) -> str:
    """The sidecar's DATABASE_URL for a database of this vendor (settings_dict)."""
    scheme = SCHEMES.get(vendor)
    if scheme is None:
        raise CommandError(
            f"unsupported database engine {database['ENGINE']} ({vendor}): the "
            "wsserver sidecar opens read-only only PostgreSQL, SQLite and "
            "MySQL/MariaDB databases"
        )
    if scheme == "sqlite":
        # Quoted: dj-database-url unquotes the path, which may hold "?" or "#".
        return f"sqlite:///{urllib.parse.quote(str(database['NAME']))}"
    user = urllib.parse.quote(database.get("USER") or "", safe="")
    password = database.get("PASSWORD") or ""
    credentials = user
    if password:
        credentials += ":" + secret(urllib.parse.quote(password, safe=""))
    # A socket directory as the host is quoted ("%2Fvar%2Frun%2Fpostgresql").
    host = urllib.parse.quote(database.get("HOST") or "", safe="")
    port = f":{database['PORT']}" if database.get("PORT") else ""
    at = "@" if credentials else ""
    name = urllib.parse.quote(str(database["NAME"]), safe="")
    return f"{scheme}://{credentials}{at}{host}{port}/{name}"


def sesame_env(secret) -> dict[str, str]:
    """The SESAME_* settings the sidecar needs to verify this site's tokens.

    ``secret`` masks SESAME_KEY (or not); a timedelta SESAME_MAX_AGE becomes
    seconds, and no maximum age "none".
    """
    max_age = sesame_settings.MAX_AGE
    if hasattr(max_age, "total_seconds"):
        max_age = int(max_age.total_seconds())
    packer = getattr(settings, "SESAME_PACKER", None) or ""
    return {
        "SESAME_MAX_AGE": "none" if max_age is None else str(int(max_age)),
        "SESAME_KEY": secret(getattr(settings, "SESAME_KEY", "") or ""),
        "SESAME_SIGNATURE_SIZE": str(sesame_settings.SIGNATURE_SIZE),
        "SESAME_PACKER": packer,
        "SESAME_PRIMARY_KEY_FIELD": sesame_settings.PRIMARY_KEY_FIELD,
        "SESAME_INVALIDATE_ON_PASSWORD_CHANGE": _bool(
            sesame_settings.INVALIDATE_ON_PASSWORD_CHANGE
        ),
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE": _bool(
            sesame_settings.INVALIDATE_ON_EMAIL_CHANGE
        ),
    }


def user_model_env() -> dict[str, str]:
    """The WS_USER_* settings for a custom user model (none for auth.User).

    Raises CommandError for a primary key type the sidecar cannot read.
    """
    User = get_user_model()
    if User._meta.label == "auth.User":
        return {}
    pk_type = PK_TYPES.get(User._meta.pk.get_internal_type())
    if pk_type is None:
        raise CommandError(
            f"{User._meta.label}'s primary key is a "
            f"{User._meta.pk.get_internal_type()}: wsserver supports int, bigint "
            "and uuid primary keys"
        )
    return {
        "WS_USER_TABLE": User._meta.db_table,
        "WS_USER_PK": pk_type,
        "WS_USERNAME_FIELD": User.USERNAME_FIELD,
        "WS_USER_EMAIL_FIELD": User.get_email_field_name(),
        "WS_USER_MODEL_NAME": User.__name__,
    }


def _bool(value: bool) -> str:
    return "true" if value else "false"
