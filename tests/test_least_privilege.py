"""The sidecar as a PostgreSQL role with only the README's GRANTs, and no secret
in its logs.

The GRANT statements are read from the README, so the documentation is what
is tested. The sidecar logs at DEBUG level while tokens succeed and fail.
"""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from clients import assert_no_event, closed_with, receive_event
from processes import ROOT, SECRET_KEY, SidecarProcess

pytestmark = pytest.mark.e2e

DB_PASSWORD = f"db-{uuid.uuid4().hex}"


def readme_grants(role: str, database: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A read-only database role", 1)[1]
    sql = section.split("```sql", 1)[1].split("```", 1)[0]
    sql = sql.replace("wsserver_ro", role).replace("'...'", f"'{DB_PASSWORD}'")
    sql = re.sub(r"ON DATABASE site\b", f'ON DATABASE "{database}"', sql)
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


@pytest.fixture(scope="module")
def site(postgres_site):
    return postgres_site


@pytest.fixture(scope="module")
def role(site, postgres):
    name = f"wsserver_ro_{uuid.uuid4().hex[:8]}"
    database = site.env["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(site.env["DATABASE_URL"], autocommit=True) as connection:
        for statement in readme_grants(name, database):
            connection.execute(statement)
    yield name
    with psycopg.connect(site.env["DATABASE_URL"], autocommit=True) as connection:
        connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}")
        connection.execute(f"REVOKE ALL ON SCHEMA public FROM {name}")
        connection.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {name}')
        connection.execute(f"DROP ROLE {name}")


@pytest.fixture(scope="module")
def sidecar(site, role, tmp_path_factory):
    host = site.env["DATABASE_URL"].split("@", 1)[1]
    process = SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("least"),
        DATABASE_URL=f"postgresql://{role}:{DB_PASSWORD}@{host}",
        WS_LOG_LEVEL="DEBUG",
    ).start()
    yield process
    assert process.stop() == 0


async def test_the_role_can_read_nothing_else(site, role, sidecar):
    host = site.env["DATABASE_URL"].split("@", 1)[1]
    url = f"postgresql://{role}:{DB_PASSWORD}@{host}"
    with psycopg.connect(url) as connection:
        connection.execute("SELECT count(*) FROM auth_user")
    for table in ["django_admin_log", "django_session", "catalog_article"]:
        with (
            psycopg.connect(url) as connection,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            connection.execute(f"SELECT 1 FROM {table}")


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
