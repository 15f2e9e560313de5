from django.apps import AppConfig


class PublisherConfig(AppConfig):
    """The publisher app: once Django is ready, it connects its signal handlers."""

    name = "wsserver.publisher"
    label = "wsserver_publisher"
    verbose_name = "wsserver publisher"

    def ready(self) -> None:
        from . import changes, checks, signals  # noqa: F401 (checks registers)

        signals.connect()
        # Checks WSSERVER_MODELS: ImproperlyConfigured names a bad entry.
        changes.connect()
