"""Print a django-sesame token for a user, to test the sidecar by hand."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from wsserver.publisher.tokens import token_for


class Command(BaseCommand):
    help = "Print a token to send as the first message to the wsserver sidecar."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(
                f"no user with {User.USERNAME_FIELD} {username!r}"
            ) from None
        self.stdout.write(token_for(user))
