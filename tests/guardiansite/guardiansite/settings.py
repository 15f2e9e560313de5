"""Settings of the django-guardian test site, from the environment.

As the example site's: ``DATABASE_URL``, ``SECRET_KEY``, ``DEBUG``,
``WSSERVER_REDIS_URL``, ``WSSERVER_CHANNEL``, ``SESAME_MAX_AGE``; and
``GUARDIANSITE_MODELS``, a JSON object replacing WSSERVER_MODELS.
"""

import json
import os

import dj_database_url

SECRET_KEY = os.environ.get("SECRET_KEY", "guardiansite-secret-key-for-tests-only")
DEBUG = os.environ.get("DEBUG", "0") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "guardian",
    "sesame",
    "tickets",
    "wsserver.publisher",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "wsserver.publisher.middleware.CurrentUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "guardiansite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
        os.environ.get("DATABASE_URL", "sqlite:///guardiansite.sqlite3")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

SESAME_MAX_AGE = int(os.environ.get("SESAME_MAX_AGE", "86400"))

WSSERVER_REDIS_URL = os.environ.get("WSSERVER_REDIS_URL", "redis://127.0.0.1:6379/1")
WSSERVER_CHANNEL = os.environ.get("WSSERVER_CHANNEL", "events")
WSSERVER_MODELS = {
    # Per-object permissions: who django-guardian lets view the ticket.
    "tickets.Ticket": "wsserver.publisher.audiences.guardian",
    # Who may view or change notices, as admin events.
    "tickets.Notice": None,
}
if "GUARDIANSITE_MODELS" in os.environ:
    WSSERVER_MODELS = json.loads(os.environ["GUARDIANSITE_MODELS"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"wsserver": {"handlers": ["console"], "level": "INFO"}},
}
