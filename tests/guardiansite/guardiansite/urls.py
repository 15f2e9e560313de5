from django.contrib import admin
from django.urls import include, path
from tickets import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("wsserver/", include("wsserver.publisher.urls")),
    path("notices/new/", views.new_notice),
]
