"""The example site's own event: a notification for the user who asks for it."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from wsserver.publisher import publish


@require_POST
@login_required
def notify(request: HttpRequest) -> JsonResponse:
    """Publish ``example.notification`` to the logged-in user only: their
    other tabs and devices receive it too, nobody else does (superusers
    included). Sent once the request's transaction commits; at once here."""
    publish(
        "example.notification",
        {
            "message": f"Hello {request.user}, this notification is for you only.",
            "sent_at": timezone.now().isoformat(),
        },
        users=[request.user],
    )
    return JsonResponse({"published": "example.notification"})
