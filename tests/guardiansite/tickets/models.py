from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Ticket(models.Model):
    """Visible to its assignee and team only: django-guardian object permissions."""

    title = models.CharField(max_length=200)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    team = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.title


class Notice(models.Model):
    """Visible to whoever may view notices (a model permission)."""

    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text
