"""Print the environment the wsserver sidecar needs to work with this site.

Run it on the main site; paste the output into the sidecar's systemd unit,
container environment or Kubernetes manifest. Secrets (SECRET_KEY and its
fallbacks, the database password, the Redis password and any secret
parameter of REDIS_URL, SESAME_KEY) are masked unless --show-secrets is given.
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

        env = {
            "DATABASE_URL": database_url(
                connections[database].vendor,
                connections[database].settings_dict,
                secret,
            ),
            "SECRET_KEY": secret(settings.SECRET_KEY),
            "SECRET_KEY_FALLBACKS": secret(
                ",".join(getattr(settings, "SECRET_KEY_FALLBACKS", []))
            ),
            "REDIS_URL": redis_url() if show_secrets else mask_url(redis_url(), MASK),
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
        for name, value in env.items():
            self.stdout.write(f"{name}={shlex.quote(value)}")


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
