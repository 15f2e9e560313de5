"""Demo users with different permissions, to see who receives which event.

admin: superuser (every event). alice: view_article (articles only).
bob: no permission (nothing). carol: inactive, has view_article (refused).
dave: in the "product-editors" group, which has change_product (products only).
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand

USERS = {
    "admin": {"is_superuser": True},
    "alice": {"permissions": ["view_article"]},
    "bob": {},
    "carol": {"is_active": False, "permissions": ["view_article"]},
    "dave": {"groups": ["product-editors"]},
}
GROUPS = {"product-editors": ["change_product"]}


class Command(BaseCommand):
    help = "Create (or reset) the demo users: admin, alice, bob, carol and dave."

    def add_arguments(self, parser):
        parser.add_argument("--password", default="demo")

    def handle(self, *args, password, **options):
        User = get_user_model()
        groups = {}
        for name, codenames in GROUPS.items():
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.set(self.permissions(codenames))
            groups[name] = group
        for name, spec in USERS.items():
            username = f"{name}@example.com" if User.USERNAME_FIELD == "email" else name
            user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                user = User(**{User.USERNAME_FIELD: username})
                if User.USERNAME_FIELD != "email" and hasattr(user, "email"):
                    user.email = f"{name}@example.com"
            user.is_active = spec.get("is_active", True)
            user.is_staff = True
            user.is_superuser = spec.get("is_superuser", False)
            user.set_password(password)
            user.save()
            user.user_permissions.set(self.permissions(spec.get("permissions", [])))
            user.groups.set([groups[group] for group in spec.get("groups", [])])
            self.stdout.write(f"{username}: {self.describe(spec)}")

    def permissions(self, codenames):
        return Permission.objects.filter(
            content_type__app_label="catalog", codename__in=codenames
        )

    def describe(self, spec):
        if spec.get("is_superuser"):
            return "superuser, sees every event"
        parts = [*spec.get("permissions", [])]
        parts += [f"group {g} ({', '.join(GROUPS[g])})" for g in spec.get("groups", [])]
        text = ", ".join(parts) or "no permission, sees nothing"
        return text + ("" if spec.get("is_active", True) else ", INACTIVE")
