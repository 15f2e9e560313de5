"""Create the benchmark's users in the example site's database, print tokens.

Run as a Django script with the example site's settings:
``python bench/make_users.py COUNT OUTPUT.json``. Users are spread over the
example's three models: 30% may view articles, 30% products, 30% suppliers,
10% nothing; so each event is for about 30% of them. For events with an
audience, 30% of them (user n with n % 10 in 0, 4, 7) are members of the
group ``bench-group`` (which grants nothing), and 30% (n % 10 in 0, 5, 8)
have the permission ``catalog.add_article`` (which shows them no model's
events: only view and change permissions do); both include n % 10 == 0, the
clients bench/load.py samples for latency. Writes
``[{"token": ..., "content_type_id": ... or null, "user": "<pk>", "groups":
[<pk>, ...], "permissions": ["app_label.codename", ...]}, ...]``.
"""

import json
import os
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example"
sys.path[:0] = [str(EXAMPLE), str(EXAMPLE.parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.auth.models import Group, Permission, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402

from wsserver.publisher.tokens import token_for  # noqa: E402

GROUP = "bench-group"
# Granted directly; not a view or change permission, so that it changes no
# one's admin (content type) events.
PERMISSION = "catalog.add_article"
IN_GROUP = {0, 4, 7}
WITH_PERMISSION = {0, 5, 8}


def main(count: int, output: str) -> None:
    models = ["article", "product", "supplier"]
    content_types = {
        model: ContentType.objects.get(app_label="catalog", model=model)
        for model in models
    }
    permissions = {
        model: Permission.objects.get(
            content_type=content_types[model], codename=f"view_{model}"
        )
        for model in models
    }
    app_label, codename = PERMISSION.split(".")
    extra = Permission.objects.get(content_type__app_label=app_label, codename=codename)
    password = make_password("bench")  # one hash for all: hashing is slow
    User.objects.filter(username__startswith="bench-").delete()
    Group.objects.filter(name=GROUP).delete()
    group = Group.objects.create(name=GROUP)
    users = User.objects.bulk_create(
        [User(username=f"bench-{n}", password=password) for n in range(count)]
    )
    Through = User.user_permissions.through
    Membership = User.groups.through
    rows = []
    memberships = []
    plan = []
    for n, user in enumerate(users):
        slot = n % 10
        model = models[slot % 3] if slot < 9 else None
        codenames = []
        if model is not None:
            rows.append(Through(user_id=user.pk, permission_id=permissions[model].pk))
            codenames.append(f"catalog.view_{model}")
        if slot in WITH_PERMISSION:
            rows.append(Through(user_id=user.pk, permission_id=extra.pk))
            codenames.append(PERMISSION)
        groups = []
        if slot in IN_GROUP:
            memberships.append(Membership(user_id=user.pk, group_id=group.pk))
            groups.append(group.pk)
        plan.append(
            {
                "token": token_for(user),
                "content_type_id": content_types[model].pk if model else None,
                "user": str(user.pk),
                "groups": groups,
                "permissions": codenames,
            }
        )
    Through.objects.bulk_create(rows, batch_size=5000)
    Membership.objects.bulk_create(memberships, batch_size=5000)
    Path(output).write_text(json.dumps(plan))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
