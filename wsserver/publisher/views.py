"""A fresh token as JSON, so that a page can fetch one before each connection."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .tokens import token_for


@never_cache
@require_GET
def token(request: HttpRequest) -> JsonResponse:
    """A fresh token as ``{"token": ...}``, never cached; 401 if not logged in."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=401)
    return JsonResponse({"token": token_for(request.user)})
