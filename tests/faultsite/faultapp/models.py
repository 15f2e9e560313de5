from django.db import models
from tickets.models import Ticket


class Blob(models.Model):
    """Not listed in WSSERVER_MODELS."""

    name = models.CharField(max_length=50)


class Item(models.Model):
    """Not listed either: deleted in cascade of its blob."""

    blob = models.ForeignKey(Blob, on_delete=models.CASCADE)


class Doc(models.Model):
    """Listed with an audience callable that makes a database error."""

    title = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.title


class TicketProxy(Ticket):
    """A proxy of a model listed with the guardian audience."""

    class Meta:
        proxy = True
