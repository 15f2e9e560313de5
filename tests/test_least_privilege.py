"""The sidecar as a PostgreSQL role, or a MariaDB account, with only the
README's GRANTs, and no secret in its logs.

The GRANT statements are read from the README, so the documentation is what
is tested. The sidecar logs at DEBUG level while tokens succeed and fail.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid

import psycopg
import pytest
from clients import assert_no_event, closed_with, receive_event
from processes import ROOT, SECRET_KEY, MainSite, SidecarProcess

pytestmark = pytest.mark.e2e

DB_PASSWORD = f"db-{uuid.uuid4().hex}"


def readme_grants(role: str, database: str, mysql: bool = False) -> list[str]:
    """The README's statements for PostgreSQL (its first sql block) or for
    MySQL/MariaDB (the second), for this role and database."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A read-only database role", 1)[1]
    blocks = [block.split("```", 1)[0] for block in section.split("```sql")[1:]]
    sql = blocks[1 if mysql else 0]
    sql = sql.replace("wsserver_ro", role).replace("'...'", f"'{DB_PASSWORD}'")
    if mysql:
        sql = re.sub(r"ON site\.", f"ON `{database}`.", sql)
    else:
        sql = re.sub(r"ON DATABASE site\b", f'ON DATABASE "{database}"', sql)
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


class Connection:
    """A connection to the site's database, PostgreSQL or MySQL/MariaDB."""

    def __init__(self, url: str) -> None:
        self.mysql = url.startswith("mysql://")
        if self.mysql:
            import MySQLdb

            parts = urllib.parse.urlsplit(url)
            self.connection = MySQLdb.connect(
                host=parts.hostname,
                port=parts.port or 3306,
                user=urllib.parse.unquote(parts.username or ""),
                password=urllib.parse.unquote(parts.password or ""),
                database=parts.path.lstrip("/"),
                autocommit=True,
            )
        else:
            self.connection = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str) -> None:
        self.connection.cursor().execute(sql)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def role_url(site_url: str, role: str) -> str:
    """The site's database URL, as ``role``."""
    scheme, rest = site_url.split("://", 1)
    return f"{scheme}://{role}:{DB_PASSWORD}@{rest.split('@', 1)[1]}"


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def site(request, mysql, redis_url):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_site")
    channel = f"least-privilege-mysql-{uuid.uuid4().hex[:8]}"
    return MainSite(mysql.create(), redis_url, channel).prepare()


@pytest.fixture(scope="module")
def role(site):
    name = f"wsserver_ro_{uuid.uuid4().hex[:8]}"
    url = site.env["DATABASE_URL"]
    database = url.rsplit("/", 1)[1]
    mysql = url.startswith("mysql://")
    with Connection(url) as connection:
        for statement in readme_grants(name, database, mysql):
            connection.execute(statement)
    yield name
    with Connection(url) as connection:
        if mysql:
            connection.execute(f"DROP USER '{name}'@'%'")
        else:
            connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}")
            connection.execute(f"REVOKE ALL ON SCHEMA public FROM {name}")
            connection.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {name}')
            connection.execute(f"DROP ROLE {name}")


@pytest.fixture(scope="module")
def sidecar(site, role, tmp_path_factory):
    process = SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("least"),
        DATABASE_URL=role_url(site.env["DATABASE_URL"], role),
        WS_LOG_LEVEL="DEBUG",
    ).start()
    yield process
    assert process.stop() == 0


async def test_the_role_can_read_nothing_else(site, role, sidecar):
    url = role_url(site.env["DATABASE_URL"], role)
    with Connection(url) as connection:
        connection.execute("SELECT count(*) FROM auth_user")
        mysql = connection.mysql
    if mysql:
        import MySQLdb

        denied = MySQLdb.OperationalError  # 1142: SELECT command denied
    else:
        denied = psycopg.errors.InsufficientPrivilege
    for table in ["django_admin_log", "django_session", "catalog_article"]:
        with Connection(url) as connection, pytest.raises(denied) as raised:
            connection.execute(f"SELECT 1 FROM {table}")
        if mysql:
            assert raised.value.args[0] == 1142
    with Connection(url) as connection, pytest.raises(denied):
        connection.execute("INSERT INTO auth_group (name) VALUES ('x')")


async def test_the_end_to_end_scenario_as_the_read_only_role(site, sidecar, admin):
    superuser = await sidecar.connect(site.token("admin"))
    alice = await sidecar.connect(site.token("alice"))  # view_article
    dave = await sidecar.connect(site.token("dave"))  # group permission
    refused = await sidecar.connect(site.token("carol"))  # inactive
    assert await closed_with(refused) == (1011, "authentication failed")

    admin.add("article", title="Least privilege", body="x")
    article = await receive_event(superuser)
    assert (await receive_event(alice)) == article
    await assert_no_event(dave)

    pks = []
    for name in ["A", "B", "C"]:
        admin.add("product", name=name, price="1")
        pks.append((await receive_event(dave))["object_id"])
    admin.delete_selected("product", pks)
    deleted = [await receive_event(dave) for _ in pks]
    assert sorted(event["object_id"] for event in deleted) == sorted(pks)
    for websocket in (superuser, alice, dave):
        await websocket.close()


async def test_no_secret_in_any_log_line(site, sidecar):
    good = site.token("alice")
    expired = site.token("alice", SESAME_MAX_AGE="1")  # still valid here: 30 s
    tampered = good[:-3] + "AAA"
    for token in [good, good, tampered, "garbage-token-value", expired]:
        websocket = await sidecar.connect(token)  # decided on, so logged
        await websocket.close()
    log = sidecar.log()
    assert "DEBUG" in log  # the level really was DEBUG
    for secret in [good, tampered, expired, SECRET_KEY, DB_PASSWORD]:
        assert secret not in log
    assert "garbage-token-value" not in log
