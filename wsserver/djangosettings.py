"""Django settings for the sidecar's stripped-down project, made from a Config.

``settings_auth.py`` applies them. Only contrib.auth, contenttypes and
django-sesame are installed; the database is the main site's, opened
read-only: the sidecar never writes to it and never migrates it.

How a database is opened read-only depends on its backend's *vendor* (what
``DatabaseWrapper.vendor`` says, so PostGIS counts as PostgreSQL and
SpatiaLite as SQLite) and on its driver, which interprets the options:

- PostgreSQL (psycopg, psycopg2): every session starts with
  ``default_transaction_read_only=on``;
- SQLite (sqlite3): the file is opened as a ``mode=ro`` URI;
- MySQL and MariaDB (mysqlclient): ``SET SESSION TRANSACTION READ ONLY``
  runs at connect time.

Any other backend is refused (:func:`read_only_problem`): the sidecar would
not know how to keep it from writing.

PostgreSQL and MySQL/MariaDB connections also give up after CONNECT_TIMEOUT
seconds on a server that accepts and never answers (libpq's and mysqlclient's
``connect_timeout``, which covers MariaDB's handshake too), unless the URL
sets its own ``?connect_timeout=``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Not at run time: config may import read_only_problem from here.
    from .config import Config

__all__ = [
    "database_vendor",
    "django_settings",
    "read_only_database",
    "read_only_problem",
]

# Vendor -> the drivers (top-level module of DatabaseWrapper.Database) that
# understand the options below that make a session read-only.
READ_ONLY_DRIVERS: dict[str, tuple[str, ...]] = {
    "postgresql": ("psycopg", "psycopg2"),
    "sqlite": ("sqlite3", "pysqlite3"),
    "mysql": ("MySQLdb",),
}
SUPPORTED = (
    "PostgreSQL (and PostGIS) through psycopg or psycopg2, SQLite (and "
    "SpatiaLite) and MySQL or MariaDB through mysqlclient"
)
# A database that does not answer must not hold an authentication past the
# client's patience (seconds).
CONNECT_TIMEOUT = 5
MYSQL_READ_ONLY = "SET SESSION TRANSACTION READ ONLY"


def django_settings(config: Config) -> dict[str, Any]:
    """The settings module's contents, as a dict of upper-case names."""
    user_model = config.user_model
    installed_apps = [
        # First, so that its refusing commands (migrate, flush...) win over
        # Django's.
        "authproject.readonly",
        "django.contrib.auth",
        "django.contrib.contenttypes",
    ]
    if user_model.custom:
        installed_apps.append("authproject.accounts")
        auth_user_model = f"accounts.{user_model.class_name}"
    else:
        auth_user_model = "auth.User"
    return {
        "SECRET_KEY": config.secret_key,
        "SECRET_KEY_FALLBACKS": list(config.secret_key_fallbacks),
        "DEBUG": False,
        "ALLOWED_HOSTS": [],
        "INSTALLED_APPS": installed_apps,
        "MIDDLEWARE": [],
        "DATABASES": {"default": read_only_database(config)},
        "DATABASE_ROUTERS": ["authproject.readonly.routers.NeverMigrate"],
        "AUTH_USER_MODEL": auth_user_model,
        "AUTHENTICATION_BACKENDS": ["sesame.backends.ModelBackend"],
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        # The sidecar configures logging itself (wsserver.logs).
        "LOGGING_CONFIG": None,
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        **config.sesame,
    }


def database_vendor(engine: str) -> tuple[str, str]:
    """The vendor of a database backend and the name of its driver's module.

    Loads the backend (``ENGINE.base``), which works before Django's settings
    are configured; raises what loading raises (ImproperlyConfigured when the
    backend or its driver is not installed).
    """
    from django.db.utils import load_backend

    wrapper = load_backend(engine).DatabaseWrapper
    driver = getattr(wrapper, "Database", None)
    return wrapper.vendor, getattr(driver, "__name__", "") or ""


def read_only_problem(database: Mapping[str, Any]) -> str | None:
    """Why the sidecar cannot open this database (a DATABASES entry, as parsed
    from DATABASE_URL) read-only, or None if it can. The problem names
    DATABASE_URL, for a configuration error."""
    engine = database.get("ENGINE") or ""
    try:
        vendor, driver = database_vendor(engine)
    except Exception as exc:  # ImproperlyConfigured, ImportError, or anything
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return (
            f"DATABASE_URL: cannot load the database backend {engine!r} ({reason}), "
            "so the sidecar cannot open that database read-only. It opens "
            f"read-only: {SUPPORTED}"
        )
    drivers = READ_ONLY_DRIVERS.get(vendor)
    if drivers is None:
        return (
            f"DATABASE_URL: the database backend {engine!r} is a {vendor!r} "
            "database, which the sidecar cannot open read-only; it never writes "
            f"to the main site's database and opens read-only only: {SUPPORTED}"
        )
    if driver.split(".", 1)[0] not in drivers:
        return (
            f"DATABASE_URL: the database backend {engine!r} talks to {vendor} "
            f"through {driver or 'an unknown driver'!r}, with which the sidecar "
            f"cannot open the database read-only; it needs {' or '.join(drivers)}. "
            f"It opens read-only: {SUPPORTED}"
        )
    return None


def read_only_database(config: Config) -> dict[str, Any]:
    """The main site's database, in a mode where writes fail.

    Raises ConfigError if the database cannot be opened read-only.
    """
    from .config import ConfigError

    problem = read_only_problem(config.database)
    if problem is not None:
        raise ConfigError([problem])
    vendor, _ = database_vendor(config.database["ENGINE"])
    database = dict(config.database)
    options = database["OPTIONS"] = dict(database.get("OPTIONS") or {})
    pooled = bool(options.get("pool"))
    # Django never closes connections outside the request cycle: the sidecar
    # recycles them itself (wsserver.database) with these two settings.
    database["CONN_MAX_AGE"] = 0 if pooled else config.db_conn_max_age
    database["CONN_HEALTH_CHECKS"] = not pooled
    if vendor == "postgresql":
        options["options"] = (
            f"{options.get('options', '')} -c default_transaction_read_only=on"
        ).strip()
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
    elif vendor == "sqlite":
        database["NAME"] = sqlite_read_only_uri(database["NAME"])
        options["uri"] = True
        options.setdefault("timeout", 20)
    elif vendor == "mysql":
        # Last, so that it wins over anything the URL's init_command sets.
        # mysqlclient runs several statements (it connects with
        # CLIENT.MULTI_STATEMENTS); Django's own "SET SESSION TRANSACTION
        # ISOLATION LEVEL" afterwards leaves the access mode alone.
        init_command = (options.get("init_command") or "").strip().rstrip(";")
        options["init_command"] = (
            f"{init_command}; {MYSQL_READ_ONLY}" if init_command else MYSQL_READ_ONLY
        )
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return database


def sqlite_read_only_uri(name: str | os.PathLike[str]) -> str:
    """An SQLite URI that opens the database file ``name`` read-only.

    The path is made absolute and percent-encoded, so that "?", "#", "%" or
    spaces in it stay part of the path. A name that is already a "file:" URI
    (Django opens SQLite names as URIs) keeps its parameters, with mode=ro.
    """
    name = os.fspath(name)
    if name.startswith("file:"):
        rest, hash_, fragment = name.partition("#")
        base, _, query = rest.partition("?")
        parameters = [
            (key, value)
            for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
            if key != "mode"
        ]
        parameters.append(("mode", "ro"))
        return f"{base}?{urllib.parse.urlencode(parameters)}{hash_}{fragment}"
    path = urllib.parse.quote(os.fsencode(os.path.abspath(name)), safe="/")
    # "file://x/..." would name the host x: a path that starts with "//"
    # needs an empty authority in front of it.
    prefix = "file://" if path.startswith("//") else "file:"
    return f"{prefix}{path}?mode=ro"
