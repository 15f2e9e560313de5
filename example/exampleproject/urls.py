from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from . import views

urlpatterns = [
    path(
        "",
        TemplateView.as_view(
            template_name="index.html",
            extra_context={"websocket_url": settings.WSSERVER_WEBSOCKET_URL},
        ),
    ),
    path("notify/", views.notify, name="notify"),
    path("admin/", admin.site.urls),
    path("wsserver/", include("wsserver.publisher.urls")),
]
