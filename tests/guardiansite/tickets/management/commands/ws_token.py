"""Print a django-sesame token for a user, in the sidecar's scope."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from wsserver.publisher.tokens import token_for


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        self.stdout.write(token_for(get_user_model().objects.get(username=username)))
