"""Include with ``path("wsserver/", include("wsserver.publisher.urls"))``."""

from django.urls import path
from django.views.i18n import JavaScriptCatalog

from . import views

urlpatterns = [
    path("token/", views.token, name="wsserver-token"),
    # The live admin's strings, translated (WSSERVER_ADMIN).
    path(
        "jsi18n/",
        JavaScriptCatalog.as_view(packages=["wsserver.publisher"]),
        name="wsserver-jsi18n",
    ),
]
