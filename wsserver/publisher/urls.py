"""Include with ``path("wsserver/", include("wsserver.publisher.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("token/", views.token, name="wsserver-token"),
]
