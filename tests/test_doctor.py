"""The configuration doctor: `manage.py wsserver_env` feeds `wsserver check`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import redis_users
from processes import ROOT, SECRET_KEY, MainSite, free_port
from waiting import units

pytestmark = pytest.mark.e2e


def sidecar_env(site: MainSite) -> dict[str, str]:
    """The site's wsserver_env output, as an environment.

    Its REDIS_URL is the main site's, the publisher's Redis user: as
    docs/redis.md says, it is replaced by the sidecar's user.
    """
    env = parsed_env(site.manage("wsserver_env", "--show-secrets"))
    env["REDIS_URL"] = redis_users.shared.url_for(
        "sidecar", env["REDIS_URL"], env["WS_CHANNEL"]
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
    assert env["REDIS_URL"] == (
        "redis://:********@127.0.0.1:6379/15?password=********&db=15"
    )
    shown = site.manage("wsserver_env", "--show-secrets", WSSERVER_REDIS_URL=redis_url)
    assert parsed_env(shown)["REDIS_URL"] == redis_url
    # Pasted as is, the placeholder is caught.
    result = check(env)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
    assert any(
        "a secret in REDIS_URL is '********'" in p and "--show-secrets" in p
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


def test_a_missing_grant_is_explained(site):
    """A role that may read every table but django_content_type."""
    role, password = f"wsserver_doctor_{uuid.uuid4().hex[:8]}", "doctor-password"
    with psycopg.connect(site.env["DATABASE_URL"], autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        connection.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        connection.execute(f"REVOKE SELECT ON django_content_type FROM {role}")
    try:
        host_and_database = site.env["DATABASE_URL"].split("@", 1)[1]
        env = {
            **sidecar_env(site),
            "DATABASE_URL": f"postgresql://{role}:{password}@{host_and_database}",
        }
        result = check(env)
        assert result.returncode == 1, result.stdout + result.stderr
        [problem] = [line for line in result.stdout.splitlines() if "PROBLEM" in line]
        assert "cannot read table 'django_content_type'" in problem
        assert f"GRANT SELECT ON django_content_type TO {role};" in problem
    finally:
        with psycopg.connect(site.env["DATABASE_URL"], autocommit=True) as connection:
            connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            connection.execute(f"DROP ROLE {role}")


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
