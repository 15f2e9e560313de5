"""Django settings for the sidecar's stripped-down project, made from a Config.

``settings_auth.py`` applies them. Only contrib.auth, contenttypes and
django-sesame are installed; the database is the main site's, opened
read-only: the sidecar never writes to it and never migrates it.
"""

from __future__ import annotations

from typing import Any

from .config import Config

__all__ = ["django_settings"]


def django_settings(config: Config) -> dict[str, Any]:
    """The settings module's contents, as a dict of upper-case names."""
    user_model = config.user_model
    installed_apps = [
        # First, so that its migrate and flush commands win over Django's.
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


def read_only_database(config: Config) -> dict[str, Any]:
    """The main site's database, in a mode where writes fail."""
    database = dict(config.database)
    database["OPTIONS"] = dict(database.get("OPTIONS", {}))
    pooled = bool(database["OPTIONS"].get("pool"))
    # Django never closes connections outside the request cycle: the sidecar
    # recycles them itself (wsserver.database) with these two settings.
    database["CONN_MAX_AGE"] = 0 if pooled else config.db_conn_max_age
    database["CONN_HEALTH_CHECKS"] = not pooled
    engine = database["ENGINE"]
    if engine.endswith("postgresql"):
        options = database["OPTIONS"].get("options", "")
        database["OPTIONS"]["options"] = (
            f"{options} -c default_transaction_read_only=on".strip()
        )
        # A database that does not answer must not hold an authentication
        # past the client's patience.
        database["OPTIONS"].setdefault("connect_timeout", 5)
    elif engine.endswith("sqlite3"):
        database["NAME"] = f"file:{database['NAME']}?mode=ro"
        database["OPTIONS"]["uri"] = True
        database["OPTIONS"].setdefault("timeout", 20)
    return database
