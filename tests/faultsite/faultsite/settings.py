"""The guardian test site's settings (tests/guardiansite), with faultapp, a
second admin site and more listed models: ``auth.User`` (the model's
audience) and ``faultapp.Doc``, whose audience callable makes a database
error."""

from guardiansite.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "faultapp"]  # noqa: F405
ROOT_URLCONF = "faultsite.urls"
WSSERVER_MODELS = {
    "tickets.Ticket": "wsserver.publisher.audiences.guardian",
    "tickets.Notice": None,
    "auth.User": None,
    "faultapp.Doc": "faultapp.audiences.database_error",
}
# The tests read the publisher's log records, not a console.
LOGGING = {"version": 1, "disable_existing_loggers": False}
