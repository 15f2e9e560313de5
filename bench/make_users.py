"""Create the benchmark's users in the example site's database, print tokens.

Run as a Django script with the example site's settings:
``python bench/make_users.py COUNT OUTPUT.json``. Users are spread over the
example's three models: 30% may view articles, 30% products, 30% suppliers,
10% nothing; so each event is for about 30% of them. Writes
``[{"token": ..., "content_type_id": ... or null}, ...]``.
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
from django.contrib.auth.models import Permission, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402

from wsserver.publisher.tokens import token_for  # noqa: E402


def main(count: int, output: str) -> None:
    models = ["article", "product", "supplier"]
    content_types = {
        model: ContentType.objects.get(app_label="catalog", model=model)
        for model in models
    }
    permissions = {
        model: Permission.objects.get(codename=f"view_{model}") for model in models
    }
    password = make_password("bench")  # one hash for all: hashing is slow
    User.objects.filter(username__startswith="bench-").delete()
    users = User.objects.bulk_create(
        [User(username=f"bench-{n}", password=password) for n in range(count)]
    )
    Through = User.user_permissions.through
    rows = []
    plan = []
    for n, user in enumerate(users):
        slot = n % 10
        model = models[slot % 3] if slot < 9 else None
        if model is not None:
            rows.append(Through(user_id=user.pk, permission_id=permissions[model].pk))
        plan.append(
            {
                "token": token_for(user),
                "content_type_id": content_types[model].pk if model else None,
            }
        )
    Through.objects.bulk_create(rows, batch_size=5000)
    Path(output).write_text(json.dumps(plan))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
