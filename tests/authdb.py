"""The example site's databases as the auth tests need them, and code run on them.

Django is set up once per process and for one configuration, while the tests
of wsserver.auth, wsserver.userquery and wsserver.contenttypes need the
sidecar's (settings_auth, from WS_* and SESAME_* variables) in several
variants, on several databases, and other test modules set Django up with the
example site's settings. So the code that runs Django runs in a child
process: ``database.sidecar(function, **arguments)`` runs a module-level
function of a test module (by convention ``sidecar_*``, defined after the
tests that use it) in ``python tests/authdb.py``, with the sidecar's settings
on that database, and returns what it returns (as JSON) and what it logged.
Data is changed the same way with the example site's settings (``site_*``
functions). The assertions stay in the tests.

Databases are the example site's, made by its migrations and seed_demo, plus
the users of site_prepare: SQLite files, PostgreSQL and MariaDB (failing when
WSSERVER_TEST_MYSQL_URL does not answer), with auth.User and with the custom
user model (UUID pk, email as username; the sidecar configured with WS_USER_*).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import PASSWORD, SECRET_KEY, MainSite

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "example"
CUSTOM_USER = {
    "WS_USER_TABLE": "accounts_user",
    "WS_USER_PK": "uuid",
    "WS_USERNAME_FIELD": "email",
}
# Users many-0... of site_prepare: more than one query's worth (500).
MANY = 600
BACKENDS = ["sqlite", "postgresql", "mysql"]


@dataclasses.dataclass
class Child:
    """What a function run in a child process returned, and what it logged."""

    value: Any
    log: str


@dataclasses.dataclass
class Database:
    """An example site's database, and how to run code against it."""

    backend: str
    custom: bool
    site: MainSite
    pks: dict[str, str] = dataclasses.field(default_factory=dict)

    def name(self, user: str) -> str:
        """The username of a user of site_prepare, as this user model has it."""
        return f"{user}@example.com" if self.custom else user

    def pk(self, user: str) -> str:
        return self.pks[self.name(user)]

    def sidecar(self, function: Callable, /, env: dict | None = None, **arguments):
        """Run ``function(**arguments)`` in a process set up as the sidecar."""
        return run(
            "sidecar",
            {
                "DJANGO_SETTINGS_MODULE": "settings_auth",
                "DATABASE_URL": self.site.env["DATABASE_URL"],
                "SECRET_KEY": SECRET_KEY,
                **(CUSTOM_USER if self.custom else {}),
                **(env or {}),
            },
            function,
            arguments,
        )

    def on_site(self, function: Callable, /, **arguments):
        """Run ``function(**arguments)`` in a process set up as the main site."""
        env = {**self.site.env, "DJANGO_SETTINGS_MODULE": "exampleproject.settings"}
        return run("site", env, function, arguments)


def run(side: str, env: dict, function: Callable, arguments: dict) -> Child:
    """Call a module-level function in a child process (see __main__ below)."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SESAME_", "WS_", "DJANGO_"))
    }
    # This checkout's code (not an installed one), and the example's apps.
    path = [str(ROOT), str(EXAMPLE)] if side == "site" else [str(ROOT)]
    result = subprocess.run(
        [sys.executable, __file__, side, function.__module__, function.__name__],
        input=json.dumps(arguments),
        env={**environ, **env, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"{function.__name__} failed:\n{result.stderr}")
    return Child(json.loads(result.stdout.splitlines()[-1]), result.stderr)


class Databases:
    """The example site's databases, made on first use, for the test session.

    ``databases(backend, custom)`` is a database prepared by site_prepare
    (made once per session), ``databases.new(...)`` one with seed_demo's
    users only, of the test's own.
    """

    def __init__(self, postgres, redis_url: str, tmp_path_factory, request) -> None:
        self.postgres = postgres
        self.redis_url = redis_url
        self.tmp_path_factory = tmp_path_factory
        self.request = request
        self.made: dict[tuple[str, bool], Database] = {}

    def __call__(self, backend: str, custom: bool) -> Database:
        if (backend, custom) not in self.made:
            database = self.new(backend, custom)
            database.pks = database.on_site(site_prepare).value
            self.made[backend, custom] = database
        return self.made[backend, custom]

    def new(self, backend: str, custom: bool = False) -> Database:
        if backend == "sqlite":
            url = f"sqlite:///{self.tmp_path_factory.mktemp('auth')}/site.sqlite3"
        elif backend == "postgresql":
            url = self.postgres.create()
        else:
            url = self.request.getfixturevalue("mysql").create()
        extra = {"EXAMPLE_CUSTOM_USER": "1"} if custom else {}
        site = MainSite(url, self.redis_url, f"auth-{uuid.uuid4().hex[:8]}", **extra)
        site.prepare()
        return Database(backend, custom, site)


# Fixtures that conftest.py offers to every test module: the prepared
# databases are made once per test session and shared by the modules that use
# them (a test that changes data changes what it alone looks at).


@pytest.fixture(scope="session")
def databases(postgres, redis_url, tmp_path_factory, request) -> Databases:
    """Prepared databases by (backend, custom user model?), made on first use."""
    return Databases(postgres, redis_url, tmp_path_factory, request)


@pytest.fixture(params=BACKENDS)
def database(request, databases) -> Database:
    """A database with auth.User."""
    return databases(request.param, False)


@pytest.fixture(
    params=[(backend, custom) for custom in (False, True) for backend in BACKENDS],
    ids=lambda param: f"{param[0]}-{'custom' if param[1] else 'auth.User'}",
)
def any_database(request, databases) -> Database:
    """A database with auth.User, or with the custom user model."""
    return databases(*request.param)


def site_prepare() -> dict[str, str]:
    """More users and groups than seed_demo's; returns {username: pk}.

    erin: view_article directly and through "article-readers", change_product
    through "product-editors". dave and gus: product-editors and
    "nothing-granted", a group without permissions. frank: nothing-granted
    only. cora, nemo, rita: no permission (for tests that change them).
    many-0...: MANY users, every other one with view_product.
    The email column is made nullable (as custom user models may have it).
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, Permission
    from django.db import connection

    User = get_user_model()

    def name(user: str) -> str:
        return f"{user}@example.com" if User.USERNAME_FIELD == "email" else user

    if User.USERNAME_FIELD != "email":
        old = User._meta.get_field("email")
        new = User._meta.get_field("email").clone()
        new.set_attributes_from_name("email")
        new.null = True
        with connection.schema_editor() as editor:
            editor.alter_field(User, old, new)
    catalog = Permission.objects.filter(content_type__app_label="catalog")
    view_article = catalog.get(codename="view_article")
    view_product = catalog.get(codename="view_product")
    editors = Group.objects.get(name="product-editors")
    readers = Group.objects.create(name="article-readers")
    readers.permissions.set([view_article])
    nothing = Group.objects.create(name="nothing-granted")
    password = make_password(PASSWORD)

    def create(user: str, **fields: Any) -> Any:
        made = User(**{User.USERNAME_FIELD: name(user)}, password=password, **fields)
        if User.USERNAME_FIELD != "email":
            made.email = f"{user}@example.com"
        made.save()
        return made

    erin = create("erin")
    erin.user_permissions.set([view_article])
    erin.groups.set([readers, editors])
    User._default_manager.get(**{User.USERNAME_FIELD: name("dave")}).groups.add(nothing)
    create("gus").groups.set([editors, nothing])
    create("frank").groups.set([nothing])
    for user in ("cora", "nemo", "rita"):
        create(user)
    User._default_manager.bulk_create(
        [
            User(**{User.USERNAME_FIELD: name(f"many-{n}")}, password=password)
            for n in range(MANY)
        ]
    )
    many = User._default_manager.filter(
        **{f"{User.USERNAME_FIELD}__startswith": "many-"}
    )
    Through = User.user_permissions.through
    Through.objects.bulk_create(
        [
            Through(user_id=user.pk, permission_id=view_product.pk)
            for n, user in enumerate(many.order_by("pk"))
            if n % 2 == 0
        ]
    )
    return {user.get_username(): str(user.pk) for user in User._default_manager.all()}


if __name__ == "__main__":
    # A child process (see run()): ``authdb.py site|sidecar MODULE FUNCTION``,
    # with the function's arguments as JSON on stdin; PYTHONPATH and
    # DJANGO_SETTINGS_MODULE say which side it is.
    import logging

    import django

    import wsserver

    # This checkout's code, also when another is installed (editable).
    assert Path(wsserver.__file__).is_relative_to(ROOT), wsserver.__file__
    django.setup()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # This module is __main__ here: not imported again for its own functions.
    module = sys.modules[__name__] if sys.argv[2] == "authdb" else None
    function = getattr(module or importlib.import_module(sys.argv[2]), sys.argv[3])
    print(json.dumps(function(**json.loads(sys.stdin.read()))))
