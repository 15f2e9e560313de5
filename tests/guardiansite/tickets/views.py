from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_POST

from .models import Notice


@require_POST
def new_notice(request):
    """A view of the site's own, outside the admin."""
    if not request.user.is_authenticated:
        return HttpResponseForbidden()
    notice = Notice.objects.create(text=request.POST["text"])
    return HttpResponse(str(notice.pk))
