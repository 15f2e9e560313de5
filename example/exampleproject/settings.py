"""Settings of the example main site, from the environment.

``DATABASE_URL`` (default: SQLite in .demo/), ``SECRET_KEY``, ``DEBUG``,
``WSSERVER_REDIS_URL``, ``WSSERVER_CHANNEL``, ``WSSERVER_SESAME_SCOPE``,
``SESAME_MAX_AGE``, ``SESAME_INVALIDATE_ON_EMAIL_CHANGE`` and
``EXAMPLE_CUSTOM_USER=1`` for a custom user model with a UUID primary key and
the email as username (table ``accounts_user``).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BASE_DIR.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "wsserver-demo-secret-key-not-for-production")
DEBUG = os.environ.get("DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

CUSTOM_USER = os.environ.get("EXAMPLE_CUSTOM_USER") == "1"

INSTALLED_APPS = [
    # Before django.contrib.admin: its admin/base_site.html adds the live
    # admin (WSSERVER_ADMIN) to every admin page.
    "wsserver.publisher",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *(["accounts"] if CUSTOM_USER else []),
    "catalog",
]
if CUSTOM_USER:
    AUTH_USER_MODEL = "accounts.User"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get(
            "DATABASE_URL", f"sqlite:///{REPO_DIR / '.demo' / 'site.sqlite3'}"
        )
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

SESAME_MAX_AGE = int(os.environ.get("SESAME_MAX_AGE", "30"))
SESAME_INVALIDATE_ON_EMAIL_CHANGE = (
    os.environ.get("SESAME_INVALIDATE_ON_EMAIL_CHANGE", "false").lower() == "true"
)

WSSERVER_REDIS_URL = os.environ.get("WSSERVER_REDIS_URL", "redis://127.0.0.1:6379/1")
# A Redis Cluster node (more may follow, comma-separated), and TLS's CAs.
WSSERVER_REDIS_CLUSTER = (
    os.environ.get("WSSERVER_REDIS_CLUSTER", "false").lower() == "true"
)
WSSERVER_REDIS_CA_FILE = os.environ.get("WSSERVER_REDIS_CA_FILE") or None
WSSERVER_CHANNEL = os.environ.get("WSSERVER_CHANNEL", "events")
WSSERVER_SESAME_SCOPE = os.environ.get("WSSERVER_SESAME_SCOPE", "wsserver")
# Where the page connects; the sidecar's WS_HOST and WS_PORT.
WSSERVER_WEBSOCKET_URL = os.environ.get(
    "WSSERVER_WEBSOCKET_URL", "ws://localhost:8888/"
)
# Live warnings, change counts and notifications in the admin.
WSSERVER_ADMIN = os.environ.get("WSSERVER_ADMIN", "true").lower() == "true"
WSSERVER_URL = WSSERVER_WEBSOCKET_URL

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"wsserver": {"handlers": ["console"], "level": "INFO"}},
}
