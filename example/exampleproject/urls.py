from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path(
        "",
        TemplateView.as_view(
            template_name="index.html",
            extra_context={"websocket_url": settings.WSSERVER_WEBSOCKET_URL},
        ),
    ),
    path("admin/", admin.site.urls),
    path("wsserver/", include("wsserver.publisher.urls")),
]
