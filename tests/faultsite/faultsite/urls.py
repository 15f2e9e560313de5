from django.urls import path
from faultapp.admin import site2
from guardiansite.urls import urlpatterns as guardiansite_urls

urlpatterns = [path("admin2/", site2.urls), *guardiansite_urls]
