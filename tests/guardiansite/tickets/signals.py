"""The site's own rule: a ticket's assignee and team may view it."""

from django.db.models.signals import post_save
from django.dispatch import receiver
from guardian.shortcuts import assign_perm

from .models import Ticket


@receiver(post_save, sender=Ticket)
def share_ticket(sender, instance: Ticket, **kwargs) -> None:
    for holder in (instance.assignee, instance.team):
        if holder is not None:
            assign_perm("tickets.view_ticket", holder, instance)
