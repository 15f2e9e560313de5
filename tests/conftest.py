"""Shared fixtures: real PostgreSQL databases, Redis channels, clients.

PostgreSQL and Redis must be running (``make test`` runs scripts/services.sh,
which starts them and creates the role the tests log in as).

``redis_url`` is unrestricted; main sites and sidecars run as Redis ACL users
made from it (redis_users.py), deleted when the session ends.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis
import redis_users

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
