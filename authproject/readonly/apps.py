from django.apps import AppConfig


class ReadOnlyConfig(AppConfig):
    name = "authproject.readonly"
    label = "wsserver_readonly"
