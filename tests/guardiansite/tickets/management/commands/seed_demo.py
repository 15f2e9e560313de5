"""The test users; prints their pks and the groups' as JSON.

admin: superuser. alice: a ticket's assignee in the tests. bob: nothing.
carol: in the "support" group, a ticket's team in the tests. dave: may view
notices (model permission).
"""

import json

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create (or reset) the test users."

    def add_arguments(self, parser):
        parser.add_argument("--password", default="demo")

    def handle(self, *args, password, **options):
        User = get_user_model()
        support, _ = Group.objects.get_or_create(name="support")
        ids = {"groups": {"support": support.pk}, "users": {}}
        for name in ["admin", "alice", "bob", "carol", "dave"]:
            user, _ = User.objects.get_or_create(username=name)
            user.is_staff = name == "admin"
            user.is_superuser = name == "admin"
            user.set_password(password)
            user.save()
            ids["users"][name] = user.pk
        User.objects.get(username="carol").groups.set([support])
        User.objects.get(username="dave").user_permissions.set(
            Permission.objects.filter(codename="view_notice")
        )
        self.stdout.write(json.dumps(ids))
