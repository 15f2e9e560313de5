"""The configuration doctor: `manage.py wsserver_env` feeds `wsserver check`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.parse
import uuid

import psycopg
import pytest
import redis_users
from clients import closed_with
from processes import ROOT, SECRET_KEY, MainSite, SidecarProcess, free_port
from waiting import units

pytestmark = pytest.mark.e2e


# wsserver_env's output for each site, made once.
_ENVIRONMENTS: dict[MainSite, str] = {}


def sidecar_env(site: MainSite) -> dict[str, str]:
    """The site's wsserver_env output, as an environment.

    Its REDIS_URL is the main site's, the publisher's Redis user: as
    docs/redis.md says, it is replaced by the sidecar's user.
    """
    if site not in _ENVIRONMENTS:
        _ENVIRONMENTS[site] = site.manage("wsserver_env", "--show-secrets")
    env = parsed_env(_ENVIRONMENTS[site])
    # As WS_REDIS_URL (which wins over REDIS_URL), or as REDIS_URL.
    redis_url = env.pop("WS_REDIS_URL", None) or env["REDIS_URL"]
    env["REDIS_URL"] = redis_users.shared.url_for(
        "sidecar", redis_url, env["WS_CHANNEL"]
    )
    return env


def check(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-m", "wsserver", "check", *args],
        env={**environ, **env},
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=units(60),
    )


def parsed_env(output: str) -> dict[str, str]:
    """wsserver_env's output as an environment, placeholders and all."""
    return {
        name: value
        for name, _, value in (
            shlex.split(line)[0].partition("=")
            for line in output.splitlines()
            if line and not line.startswith("#")
        )
    }


@pytest.fixture(
    scope="module",
    params=[
        pytest.param({}, id="auth.User"),
        pytest.param({"EXAMPLE_CUSTOM_USER": "1"}, id="custom user"),
    ],
)
def site_env(request) -> dict[str, str]:
    return request.param


@pytest.fixture(scope="module")
def site(postgres_site, site_env):
    postgres_site.custom = bool(site_env)
    return postgres_site


def username(site: MainSite, name: str) -> str:
    return f"{name}@example.com" if site.custom else name


def test_wsserver_env_gives_a_working_configuration(site):
    env = sidecar_env(site)
    assert env["SECRET_KEY"] == SECRET_KEY
    if site.custom:
        assert env["WS_USER_TABLE"] == "accounts_user"
        assert env["WS_USER_PK"] == "uuid"
        assert env["WS_USERNAME_FIELD"] == "email"
    else:
        assert "WS_USER_TABLE" not in env
    result = check(env, "--token", site.token(username(site, "alice")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database: the user tables match" in result.stdout
    assert "redis:" in result.stdout and "answers" in result.stdout
    assert "token: valid for user" in result.stdout
    assert "receives events for: catalog.article" in result.stdout
    assert result.stdout.strip().endswith("OK")


def test_secrets_are_masked_unless_asked_for(site):
    output = site.manage("wsserver_env")
    assert SECRET_KEY not in output
    assert ":wsserver_test@" not in output  # the database password
    assert "wsserver_test:********@" in output
    assert "SECRET_KEY='********'" in output
    assert "--show-secrets" in output
    # Pasted as is, the placeholders are caught.
    env = parsed_env(output)
    result = check(env)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
    assert any("SECRET_KEY is '********'" in p for p in problems)
    assert any("password in DATABASE_URL is '********'" in p for p in problems)
    assert all("--show-secrets" in p for p in problems if "'********'" in p)


def test_the_redis_password_is_masked_unless_asked_for(site):
    redis_url = "redis://:hunter2@127.0.0.1:6379/15?password=hunter3&db=15"
    output = site.manage("wsserver_env", WSSERVER_REDIS_URL=redis_url)
    assert "hunter2" not in output and "hunter3" not in output
    env = parsed_env(output)
    assert env.get("WS_REDIS_URL", env.get("REDIS_URL")) == (
        "redis://:********@127.0.0.1:6379/15?password=********&db=15"
    )
    shown = site.manage("wsserver_env", "--show-secrets", WSSERVER_REDIS_URL=redis_url)
    shown_env = parsed_env(shown)
    assert shown_env.get("WS_REDIS_URL", shown_env.get("REDIS_URL")) == redis_url
    # Pasted as is, the placeholder is caught.
    result = check(env)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
    assert any(
        "a secret in WS_REDIS_URL is '********'" in p and "--show-secrets" in p
        for p in problems
    ), result.stdout


@pytest.mark.parametrize("args", [["--token"], ["--token", "-"]])
def test_the_token_may_come_from_standard_input(site, args):
    token = site.token(username(site, "alice"))
    result = check(sidecar_env(site), *args, stdin=f"  {token}  \n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "token: valid for user" in result.stdout


def test_an_empty_standard_input_is_no_token(site):
    result = check(sidecar_env(site), "--token", stdin="")
    assert result.returncode == 2
    assert "--token -: no token on standard input" in result.stderr
    assert "token:" not in result.stdout


def test_redis_users_that_cannot_do_the_sidecar_s_work_are_explained(
    site, redis_acl_users, redis_url
):
    env = sidecar_env(site)
    # The main site's user (as wsserver_env prints it) may publish, not read.
    env["REDIS_URL"] = site.env["WSSERVER_REDIS_URL"]
    result = check(env)
    assert result.returncode == 1
    assert "the user may not PING" in result.stdout
    assert "the sidecar's Redis user" in result.stdout
    # A sidecar's user for another channel may not subscribe to this one.
    env["REDIS_URL"] = redis_acl_users.url_for("sidecar", redis_url, "elsewhere")
    result = check(env)
    assert result.returncode == 1
    assert "the sidecar's user may not use" in result.stdout
    assert f"WS_CHANNEL={site.env['WSSERVER_CHANNEL']!r}" in result.stdout


def test_a_broken_configuration_is_explained(site):
    env = sidecar_env(site)
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    if site.custom:
        env["WS_USER_PK"] = "int"
    else:
        env["WS_USER_TABLE"] = "users"
    result = check(env, "--token", site.token(username(site, "alice")))
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
    assert any("redis:" in p and "does not answer" in p for p in problems)
    if site.custom:
        assert any("Set WS_USER_PK=uuid" in p for p in problems)
        assert any("set WS_USER_PK=uuid" in p for p in problems if "token:" in p)
    else:
        assert any("user table 'users' does not exist" in p for p in problems), (
            result.stdout + result.stderr
        )


@pytest.mark.parametrize(
    ("user", "token_env", "sidecar_overrides", "reason"),
    [
        ("alice", {"SECRET_KEY": "another-site"}, {}, "signature does not match"),
        (
            "alice",
            {"WSSERVER_SESAME_SCOPE": ""},
            {"WS_SESAME_SCOPE": "ws"},
            "made for scope ''",
        ),
        ("alice", {}, {"SESAME_MAX_AGE": "1"}, "expired"),
        ("carol", {}, {}, "is inactive"),
    ],
)
def test_why_a_token_fails(site, user, token_env, sidecar_overrides, reason):
    token = site.token(username(site, user), **token_env)
    if reason == "expired":
        # Time passing is the test: past the token's 1 s SESAME_MAX_AGE.
        time.sleep(units(1.5))
    result = check({**sidecar_env(site), **sidecar_overrides}, "--token", token)
    assert result.returncode == 1
    assert reason in result.stdout, result.stdout


def test_an_invalid_configuration_names_the_variable():
    result = check({"SECRET_KEY": "x", "WS_USER_PK": "string"})
    assert result.returncode == 2
    assert "WS_USER_PK" in result.stderr and "int, bigint, uuid" in result.stderr


def test_an_unreachable_database_is_explained(redis_url):
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/site"
    result = check({"SECRET_KEY": "x", "DATABASE_URL": url, "REDIS_URL": redis_url})
    assert result.returncode == 1, result.stdout + result.stderr
    [problem] = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
    assert problem.startswith("PROBLEM database: cannot query")
    assert "Fix: check DATABASE_URL" in problem
    assert "secret" not in result.stdout  # the password is masked


# Roles with too few or too many privileges, on PostgreSQL and MariaDB


class Roles:
    """Roles (PostgreSQL) or accounts (MySQL/MariaDB) on a site's database,
    each granted privileges on some tables; dropped by drop_all()."""

    def __init__(self, site: MainSite) -> None:
        self.site_url = site.env["DATABASE_URL"]
        self.mysql = self.site_url.startswith("mysql://")
        self.database = self.site_url.rsplit("/", 1)[1]
        self.made: list[str] = []

    def execute(self, *statements: str) -> None:
        if self.mysql:
            import MySQLdb

            parts = urllib.parse.urlsplit(self.site_url)
            connection = MySQLdb.connect(
                host=parts.hostname,
                port=parts.port or 3306,
                user=urllib.parse.unquote(parts.username or "root"),
                password=urllib.parse.unquote(parts.password or ""),
                autocommit=True,
            )
            try:
                for statement in statements:
                    connection.cursor().execute(statement)
            finally:
                connection.close()
        else:
            with psycopg.connect(self.site_url, autocommit=True) as connection:
                for statement in statements:
                    connection.execute(statement)

    def create(self, select: list[str], write: list[str] = ()) -> tuple[str, str]:
        """A role that may SELECT from ``select`` and also change ``write``;
        its name and DATABASE_URL."""
        name, password = f"wsserver_doctor_{uuid.uuid4().hex[:8]}", "doctor-password"
        self.made.append(name)
        if self.mysql:
            account = f"'{name}'@'%'"
            self.execute(
                f"CREATE USER {account} IDENTIFIED BY '{password}'",
                *(
                    f"GRANT SELECT ON `{self.database}`.`{t}` TO {account}"
                    for t in select
                ),
                *(
                    f"GRANT INSERT, UPDATE, DELETE ON `{self.database}`.`{t}` "
                    f"TO {account}"
                    for t in write
                ),
            )
        else:
            self.execute(
                f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
                f"GRANT SELECT ON {', '.join(select)} TO {name}",
                *(
                    [f"GRANT INSERT, UPDATE ON {', '.join(write)} TO {name}"]
                    * bool(write)
                ),
            )
        scheme, rest = self.site_url.split("://", 1)
        host_and_database = rest.split("@", 1)[1]
        return name, f"{scheme}://{name}:{password}@{host_and_database}"

    def drop_all(self) -> None:
        for name in self.made:
            if self.mysql:
                self.execute(f"DROP USER IF EXISTS '{name}'@'%'")
            else:
                self.execute(
                    f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}",
                    f"DROP ROLE {name}",
                )


def sidecar_tables(site: MainSite) -> list[str]:
    """The README's seven tables, for the site's user model."""
    user = "accounts_user" if site.custom else "auth_user"
    return [
        user,
        f"{user}_groups",
        f"{user}_user_permissions",
        "auth_group",
        "auth_group_permissions",
        "auth_permission",
        "django_content_type",
    ]


@pytest.fixture(scope="module")
def mysql_site(mysql, redis_url, site_env, request) -> MainSite:
    channel = f"doctor-mysql-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    site = MainSite(mysql.create(), redis_url, channel, **site_env).prepare()
    site.custom = bool(site_env)
    return site


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def any_site(request, site_env) -> MainSite:
    """The module's site on PostgreSQL, or on MariaDB."""
    return request.getfixturevalue(
        "site" if request.param == "postgresql" else "mysql_site"
    )


@pytest.fixture
def roles(any_site):
    made = Roles(any_site)
    yield made
    made.drop_all()


def problems_of(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if "PROBLEM" in line]


@pytest.mark.parametrize("missing", [0, 2, 6])
def test_a_missing_grant_names_the_grant_to_run(any_site, roles, missing):
    """Every table but one readable: the user table, its join tables (a
    custom user's too), a group or permission table, content types."""
    tables = sidecar_tables(any_site)
    table = tables[missing]
    role, url = roles.create([t for t in tables if t != table])
    result = check({**sidecar_env(any_site), "DATABASE_URL": url})
    assert result.returncode == 1, result.stdout + result.stderr
    [problem] = problems_of(result)
    assert f"cannot read table {table!r}" in problem, problem
    assert "check DATABASE_URL" not in problem
    if roles.mysql:
        grant = f"GRANT SELECT ON `{roles.database}`.`{table}` TO '{role}'@'%';"
    else:
        grant = f"GRANT SELECT ON {table} TO {role};"
    assert f"Fix: {grant}" in problem, problem


def test_a_role_that_may_write_is_warned_about(any_site, roles):
    tables = sidecar_tables(any_site)
    role, url = roles.create(tables, write=tables[:2])
    result = check(
        {**sidecar_env(any_site), "DATABASE_URL": url},
        "--token",
        any_site.token(username(any_site, "alice")),
    )
    # A warning, not a problem: the sidecar's sessions are read-only anyway.
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert f"may change {tables[0]}, {tables[1]}, not only read" in warning
    assert role in warning and "read-only role" in warning
    assert result.stdout.strip().endswith("OK")


def test_the_read_only_role_gets_no_warning(any_site, roles):
    _, url = roles.create(sidecar_tables(any_site))
    result = check(
        {**sidecar_env(any_site), "DATABASE_URL": url},
        "--token",
        any_site.token(username(any_site, "alice")),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout
    assert "token: valid for user" in result.stdout


def test_the_site_s_own_login_is_warned_about(any_site):
    """The login the site migrates with (wsserver_env prints it) may write."""
    result = check(sidecar_env(any_site))
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert "may change auth_" in warning or "may change accounts_user" in warning


async def test_a_sidecar_missing_a_grant_says_so_and_refuses_instead_of_retrying(
    any_site, roles, tmp_path
):
    tables = sidecar_tables(any_site)
    _, url = roles.create([t for t in tables if t != "auth_permission"])
    env = {**sidecar_env(any_site), "DATABASE_URL": url}
    sidecar = SidecarProcess(tmp_path, **env).start()
    try:
        assert "cannot read table 'auth_permission'" in sidecar.log()
        alice = "alice@example.com" if any_site.custom else "alice"
        websocket = await sidecar.connect(any_site.token(alice))
        code, _ = await closed_with(websocket)
        # Not 1013 "try again later": retrying cannot help until the GRANT.
        assert code != 1013
    finally:
        sidecar.stop()
