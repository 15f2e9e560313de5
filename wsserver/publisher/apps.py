from django.apps import AppConfig


class PublisherConfig(AppConfig):
    name = "wsserver.publisher"
    label = "wsserver_publisher"
    verbose_name = "wsserver publisher"

    def ready(self) -> None:
        from . import signals

        signals.connect()
