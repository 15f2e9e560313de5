"""Name the request's user as the author of the model changes it publishes.

Add ``"wsserver.publisher.middleware.CurrentUserMiddleware"`` to
``MIDDLEWARE`` after ``AuthenticationMiddleware``: the events of
``WSSERVER_MODELS`` saved during a request then carry ``"user"`` (see
:mod:`wsserver.publisher.changes`). The user is loaded only if an event is
published. Elsewhere (a Celery task, a command), use
:func:`wsserver.publisher.changes.acting_user`.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .changes import acting_user


class CurrentUserMiddleware:
    """Sets the user making changes to ``request.user`` while the view runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_user(getattr(request, "user", None)):
            return self.get_response(request)
