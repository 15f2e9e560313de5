"""Shared fixtures: real PostgreSQL databases, Redis channels, clients.

PostgreSQL and Redis must be running (``make test`` runs scripts/services.sh,
which starts them and creates the role the tests log in as).

``redis_url`` is unrestricted; main sites and sidecars run as Redis ACL users
made from it (redis_users.py), deleted when the session ends.

End-to-end modules use ``site`` (SQLite; a module may make it
``postgres_site``, or give it settings with ``site_env``), ``live_site`` and
``admin`` when they need its pages, ``start_sidecar``, and ``publish``. Waiting
and deadlines: waiting.py (WSSERVER_TEST_TIME_UNIT scales them all).
"""

from __future__ import annotations

import os
import urllib.parse
import uuid

import psycopg
import pytest
import redis
import redis_users
from browser import Browser
from clients import publish_like_the_publisher
from processes import PASSWORD, MainSite, SidecarProcess

from wsserver.logs import mask_url

# The prepared databases of the auth tests, shared for the session.
pytest_plugins = ["authdb"]

PG_ADMIN_URL = os.environ.get(
    "WSSERVER_TEST_PG_URL",
    "postgresql://wsserver_test:wsserver_test@127.0.0.1:5432/postgres",
)
REDIS_URL = redis_users.REDIS_URL


def pytest_sessionstart(session):
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {REDIS_URL} is not answering ({exc}): run `make test`")
    redis_users.shared.delete_stale()


def pytest_sessionfinish(session):
    redis_users.shared.delete_all()


@pytest.fixture
def channel() -> str:
    """A Redis channel of one's own, so that tests never see each other's events."""
    return f"test-events-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis, unrestricted: for tests that read or trim directly."""
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_acl_users() -> redis_users.RedisUsers:
    """Make ACL users on the shared Redis (deleted when the session ends)."""
    return redis_users.shared


class PostgresDatabases:
    """Create throwaway databases on the shared server; drop them afterwards."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True)

    def create(self) -> str:
        name = f"wsserver_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        with self.admin() as connection:
            for name in self.created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres():
    databases = PostgresDatabases()
    try:
        with databases.admin():
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc}): run `make test`")
    yield databases
    databases.drop_all()


MYSQL_URL = os.environ.get("WSSERVER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")


class MySQLDatabases:
    """Throwaway databases on the local MariaDB (or MySQL), dropped afterwards."""

    def __init__(self) -> None:
        import MySQLdb  # a test dependency: `make test` installs it

        parts = urllib.parse.urlsplit(MYSQL_URL)
        self.admin = MySQLdb.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            connect_timeout=3,
            autocommit=True,
        )
        self.created: list[str] = []

    def create(self, *statements: str) -> str:
        """A new database, where ``statements`` ran; its URL."""
        name = f"wsserver_test_{uuid.uuid4().hex[:12]}"
        cursor = self.admin.cursor()
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        self.created.append(name)
        cursor.execute(f"USE {name}")
        for statement in statements:
            cursor.execute(statement)
        return f"{MYSQL_URL}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            self.admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        self.admin.close()


@pytest.fixture(scope="session")
def mysql():
    import MySQLdb

    try:
        databases = MySQLDatabases()
    except MySQLdb.OperationalError as exc:
        pytest.fail(
            f"MariaDB at {mask_url(MYSQL_URL)} is not reachable ({exc}): run "
            "`make test`, which starts it"
        )
    yield databases
    databases.drop_all()


# The example site and sidecars, shared by the end-to-end modules


@pytest.fixture(scope="module")
def site_env() -> dict[str, str]:
    """What sqlite_site and postgres_site add to the site's environment: a
    module may override this fixture (e.g. parametrized, for a custom user
    model with EXAMPLE_CUSTOM_USER)."""
    return {}


def module_channel(request, backend: str) -> str:
    """A channel of the module's own, for its site on ``backend``."""
    name = request.module.__name__.removeprefix("test_")
    return f"{name}-{backend}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def sqlite_site(redis_url, site_env, tmp_path_factory, request) -> MainSite:
    """The example site on a SQLite file and a channel of the module's own,
    with the demo users (see seed_demo). Not serving HTTP: see live_site."""
    name = request.module.__name__.removeprefix("test_")
    database = tmp_path_factory.mktemp(name) / "site.sqlite3"
    channel = module_channel(request, "sqlite")
    site = MainSite(f"sqlite:///{database}", redis_url, channel, **site_env)
    return site.prepare()


@pytest.fixture(scope="module")
def postgres_site(postgres, redis_url, site_env, request) -> MainSite:
    """The example site on a new PostgreSQL database, otherwise as sqlite_site."""
    channel = module_channel(request, "postgresql")
    return MainSite(postgres.create(), redis_url, channel, **site_env).prepare()


@pytest.fixture(scope="module")
def mariadb_site(mysql, redis_url, site_env, request) -> MainSite:
    """The example site on a new MariaDB database, otherwise as sqlite_site."""
    channel = module_channel(request, "mariadb")
    return MainSite(mysql.create(), redis_url, channel, **site_env).prepare()


@pytest.fixture(scope="module")
def site(sqlite_site) -> MainSite:
    """The module's example site: SQLite unless the module says otherwise
    (e.g. ``def site(postgres_site): return postgres_site``)."""
    return sqlite_site


@pytest.fixture(scope="module")
def live_site(site):
    """The module's site, serving HTTP (runserver) for the module's tests."""
    site.start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def admin(live_site) -> Browser:
    """The demo superuser, logged in to the site's admin."""
    browser = Browser(live_site.url)
    browser.login("admin", PASSWORD)
    return browser


@pytest.fixture
def bus(site) -> redis.Redis:
    """The site's Redis, as the main site's (the publisher's) ACL user."""
    client = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    yield client
    client.close()


@pytest.fixture
def publish(bus, site):
    """Publish an event on the site's channel as wsserver.publisher does;
    return its id."""

    def publish(event: dict) -> str:
        return publish_like_the_publisher(bus, site.env["WSSERVER_CHANNEL"], event)

    return publish


@pytest.fixture(scope="module")
def tokens(site) -> dict[str, str]:
    """Tokens of the demo users, made once (see LONG_LIVED)."""
    return {user: site.token(user) for user in ["admin", "alice", "bob"]}


@pytest.fixture(scope="module")
def sidecar_env() -> dict[str, str]:
    """What start_sidecar adds to each sidecar's environment: a module may
    override this fixture (e.g. with LONG_LIVED)."""
    return {}


@pytest.fixture
def start_sidecar(site, sidecar_env, tmp_path):
    """Start sidecars on the module's ``site``; each is stopped afterwards."""
    started = []

    def start(main_site: MainSite | None = None, **env: str) -> SidecarProcess:
        sidecar = SidecarProcess.for_site(
            main_site or site, tmp_path, **{**sidecar_env, **env}
        )
        started.append(sidecar.start())
        return sidecar

    yield start
    exit_codes = [sidecar.stop() for sidecar in started]
    assert exit_codes == [0] * len(started), exit_codes
