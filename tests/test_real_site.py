"""Found beside a real site (issue 15): what got in a new user's way.

- ``manage.py wsserver_token`` makes the hand test's token on any site (by
  username, email address or primary key), and the sidecar accepts it;
- ``WS_REDIS_URL`` wins over a ``REDIS_URL`` that the site uses for itself,
  and ``manage.py wsserver_env`` says to set it and to put the read-only role
  in ``DATABASE_URL``;
- the sidecar's log says why a token was refused, never the token;
- a login (which saves ``last_login`` only) sends no control message.

The e2e tests run the example site on SQLite, with auth.User and with the
custom user model (email login, UUID pk), and real sidecar processes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import uuid

import pytest
import redis
from authdb import CUSTOM_USER, Database
from clients import closed_with, receive_event
from processes import PASSWORD, MainSite, SidecarProcess, free_port
from waiting import units

from wsserver.config import ConfigError, load_config
from wsserver.wire import control_channel

BASE = {"SECRET_KEY": "x"}
# A Redis URL for sites that publish nothing.
REDIS = "redis://redis.invalid:6379/1"


# WS_REDIS_URL (unit)


def test_ws_redis_url_wins_over_redis_url():
    config = load_config(
        {**BASE, "REDIS_URL": "redis://cache:6379/0", "WS_REDIS_URL": "redis://bus/1"}
    )
    assert config.redis_url == "redis://bus/1"
    assert config.redis_url_variable == "WS_REDIS_URL"
    summary = config.summary()
    assert summary["WS_REDIS_URL"] == "redis://bus/1"
    assert "not used" in summary["REDIS_URL"]


def test_redis_url_is_used_without_ws_redis_url():
    for environ in ({}, {"WS_REDIS_URL": ""}):
        config = load_config({**BASE, "REDIS_URL": "redis://bus:6379/2", **environ})
        assert config.redis_url == "redis://bus:6379/2"
        assert config.redis_url_variable == "REDIS_URL"
        assert "not used" not in config.summary()["REDIS_URL"]
    assert load_config(BASE).redis_url == "redis://127.0.0.1:6379/1"


def test_errors_name_the_redis_variable_in_use():
    with pytest.raises(ConfigError) as error:
        load_config({**BASE, "WS_REDIS_URL": "http://bus"})
    assert [p.split(":")[0] for p in error.value.problems] == ["WS_REDIS_URL"]
    # The site's own REDIS_URL, overridden, is not the sidecar's business.
    config = load_config(
        {**BASE, "REDIS_URL": "memcached://x", "WS_REDIS_URL": "redis://b"}
    )
    assert config.redis_url == "redis://b"
    with pytest.raises(ConfigError) as error:
        load_config({**BASE, "REDIS_URL": "http://bus"})
    assert [p.split(":")[0] for p in error.value.problems] == ["REDIS_URL"]


def test_ws_redis_url_is_a_secret_in_the_summary():
    config = load_config({**BASE, "WS_REDIS_URL": "redis://:hunter2@bus/1"})
    assert "hunter2" not in json.dumps(config.summary())
    assert "hunter2" not in repr(config)


# The example site (e2e)


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
def custom(site_env) -> bool:
    return bool(site_env)


@pytest.fixture
def sidecar_env(custom) -> dict[str, str]:
    return dict(CUSTOM_USER) if custom else {}


def name(custom: bool, user: str) -> str:
    return f"{user}@example.com" if custom else user


def shell(site: MainSite, code: str) -> str:
    return site.manage("shell", "--verbosity", "0", "-c", code).strip()


def pk_of(site: MainSite, username: str) -> str:
    return shell(
        site,
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        f"print(U._default_manager.get(**{{U.USERNAME_FIELD: {username!r}}}).pk)",
    )


def command_error(site: MainSite, *args: str) -> str:
    """The CommandError that ``manage.py *args`` fails with."""
    with pytest.raises(RuntimeError) as error:
        site.manage(*args)
    [line] = [line for line in str(error.value).splitlines() if "CommandError" in line]
    return line


# manage.py wsserver_token


@pytest.mark.e2e
async def test_wsserver_token_is_accepted_by_the_sidecar(site, custom, start_sidecar):
    sidecar = start_sidecar()
    alice = name(custom, "alice")
    by_name = site.manage("wsserver_token", alice).strip()
    by_email = site.manage("wsserver_token", "ALICE@example.com").strip()
    by_pk = site.manage("wsserver_token", pk_of(site, alice), "--by", "pk").strip()
    for token in (by_name, by_email, by_pk):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token  # the token alone
    websockets = [await sidecar.connect(token) for token in (by_name, by_email, by_pk)]
    await sidecar.until_connections(3)
    site.manage("wsserver_publish", "demo.hello", "--data", '{"n": 1}', "--user", alice)
    for websocket in websockets:
        event = await receive_event(websocket)
        assert (event["event"], event["data"]) == ("demo.hello", {"n": 1})
        await websocket.close()


@pytest.mark.e2e
def test_wsserver_token_refuses_unknown_ambiguous_and_inactive_users(site, custom):
    assert "no user with" in command_error(site, "wsserver_token", "nobody")
    inactive = command_error(site, "wsserver_token", name(custom, "carol"))
    assert "inactive" in inactive and name(custom, "carol") in inactive
    if not custom:
        # auth.User's emails are not unique: one address, two users.
        shell(
            site,
            "from django.contrib.auth.models import User; "
            "User.objects.get_or_create(username='alice2', email='ALICE@example.com')",
        )
        try:
            ambiguous = command_error(site, "wsserver_token", "alice@example.com")
            assert "ambiguous" in ambiguous and "alice2" in ambiguous
            assert "--by" in ambiguous
            assert "no user with email 'alice'" in command_error(
                site, "wsserver_token", "alice", "--by", "email"
            )
        finally:
            shell(
                site,
                "from django.contrib.auth.models import User; "
                "User.objects.filter(username='alice2').delete()",
            )
    else:
        bad_pk = command_error(site, "wsserver_token", "42", "--by", "pk")
        assert "cannot be a primary key" in bad_pk
        unknown = command_error(site, "wsserver_token", str(uuid.uuid4()))
        assert "no user with email or primary key" in unknown


# The reasons in the sidecar's log


def expired_token(site: MainSite, username: str) -> str:
    """A token made an hour ago, as the site makes them."""
    return shell(
        site,
        "import time; from unittest import mock; "
        "from django.contrib.auth import get_user_model; "
        "from wsserver.publisher.tokens import token_for; "
        "U = get_user_model(); "
        f"u = U._default_manager.get(**{{U.USERNAME_FIELD: {username!r}}}); "
        "t = time.time() - 3600\n"
        "with mock.patch('time.time', return_value=t): print(token_for(u))",
    )


@pytest.mark.e2e
async def test_the_log_says_why_a_token_was_refused(site, custom, start_sidecar):
    sidecar = start_sidecar(WS_LOG_LEVEL="debug")
    alice = name(custom, "alice")
    tokens = {
        "expired": expired_token(site, alice),
        "inactive user": site.token(name(custom, "carol")),
        "wrong scope": site.manage(
            "wsserver_token", alice, WSSERVER_SESAME_SCOPE=""
        ).strip(),
        "bad signature": site.manage(
            "wsserver_token", alice, WSSERVER_SESAME_SCOPE="another"
        ).strip(),
        "not a django-sesame token": "not a token, but a secret!",
    }
    for token in tokens.values():
        websocket = await sidecar.connect(token)
        assert await closed_with(websocket) == (1011, "authentication failed")
    log = sidecar.log()
    failures = [line for line in log.splitlines() if "Authentication failed" in line]
    assert len(failures) == len(tokens), log
    for reason, line in zip(tokens, failures, strict=True):
        assert f": {reason}" in line, (reason, line)
    for token in tokens.values():
        assert token not in log
        assert token[:12] not in log


# Logins send no control message


@pytest.mark.e2e
def test_a_login_sends_no_control_message_a_real_change_does(site, custom, redis_url):
    alice = name(custom, "alice")
    alice_pk = pk_of(site, alice)
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe(control_channel(site.env["WSSERVER_CHANNEL"]))
    try:
        subscribed = listener.get_message(timeout=units(5))
        assert subscribed is not None and subscribed["type"] == "subscribe"
        # Two logins (update_last_login: save(update_fields=["last_login"])),
        # then a change that may change access: only that one is published.
        shell(
            site,
            "from django.contrib.auth import get_user_model\n"
            "from django.test import Client\n"
            "U = get_user_model()\n"
            f"u = U._default_manager.get(**{{U.USERNAME_FIELD: {alice!r}}})\n"
            "before = u.last_login\n"
            "for _ in range(2):\n"
            f"    assert Client().login(username={alice!r}, password={PASSWORD!r})\n"
            "u.refresh_from_db()\n"
            "assert u.last_login != before\n"
            "u.is_superuser = False\n"
            "u.save()\n",
        )
        message = listener.get_message(timeout=units(5))
        assert message is not None
        assert json.loads(message["data"]) == {"type": "users", "user_ids": [alice_pk]}
        assert listener.get_message(timeout=units(0.5)) is None
    finally:
        listener.close()


# WS_REDIS_URL and wsserver_env (e2e)


@pytest.mark.e2e
def test_wsserver_env_names_ws_redis_url_and_the_read_only_role(tmp_path):
    # wsserver_env reads the settings only: no database is opened.
    sqlite = MainSite(f"sqlite:///{tmp_path}/site.sqlite3", REDIS, "events")
    output = sqlite.manage("wsserver_env")
    names = [
        shlex.split(line)[0].partition("=")[0]
        for line in output.splitlines()
        if line and not line.startswith("#")
    ]
    assert "WS_REDIS_URL" in names and "REDIS_URL" not in names
    comments = [line for line in output.splitlines() if line.startswith("#")]
    assert any("WS_REDIS_URL wins over REDIS_URL" in line for line in comments)
    # SQLite has no login to replace.
    assert not any("read-only role" in line for line in comments)

    # A database with logins: the read-only role, also on standard error
    # (seen when the output goes to a file).
    postgres = MainSite("postgres://site:pw@db.internal/site", REDIS, "events")
    result = subprocess.run(
        [sys.executable, str(postgres.manage_py), "wsserver_env"],
        env=postgres.env,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("DATABASE_URL="))
    assert lines[at] == "DATABASE_URL='postgresql://site:********@db.internal/site'"
    assert lines[at - 4].startswith("# EDIT: this is the main site's own login")
    assert "read-only role" in lines[at - 4]
    assert "read-only role" in result.stderr
    # Still an environment file: comments, and NAME=value lines.
    assert all(
        line.startswith("#") or re.fullmatch(r"[A-Z_]+=\S*", line) for line in lines
    )


@pytest.mark.e2e
async def test_the_sidecar_takes_ws_redis_url_over_the_sites_redis_url(
    site, custom, tmp_path
):
    """A shared environment file: REDIS_URL is the site's cache (here a port
    nothing listens on), WS_REDIS_URL the events' Redis."""
    import redis_users

    env = {
        "DATABASE_URL": site.env["DATABASE_URL"],
        "WS_CHANNEL": site.env["WSSERVER_CHANNEL"],
        "WS_REDIS_URL": redis_users.shared.url_for(
            "sidecar", site.env["WSSERVER_REDIS_URL"], site.env["WSSERVER_CHANNEL"]
        ),
        **(CUSTOM_USER if custom else {}),
    }
    sidecar = SidecarProcess(tmp_path, **env)
    sidecar.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    sidecar.start()
    try:
        alice = name(custom, "alice")
        websocket = await sidecar.connect(site.manage("wsserver_token", alice).strip())
        await sidecar.until_connections(1)
        site.manage("wsserver_publish", "demo.hello", "--user", alice)
        assert (await receive_event(websocket))["event"] == "demo.hello"
        await websocket.close()
        assert "not used: WS_REDIS_URL is set" in sidecar.log()
    finally:
        assert sidecar.stop() == 0


# Reasons, unit: the Authenticator on the example site's databases (authdb)


@pytest.fixture(
    params=[("sqlite", False), ("postgresql", True)],
    ids=["sqlite-auth.User", "postgresql-custom"],
)
def auth_database(request, databases) -> Database:
    return databases(*request.param)


@pytest.mark.e2e
def test_refusals_say_why_in_one_query(auth_database):
    db = auth_database
    result = db.sidecar(
        sidecar_reasons, username=db.name("alice"), inactive=db.name("carol")
    ).value
    assert result["queries"] == 1
    reasons = result["reasons"]
    assert reasons["good"] is None
    assert reasons["expired"].startswith("expired: made 3600 s ago")
    assert reasons["unknown user"].startswith("unknown user: no user with")
    assert reasons["inactive user"] == f"inactive user {db.pk('carol')}"
    assert reasons["default scope"].startswith("wrong scope for user")
    for forged in ("another scope", "bad signature", "revoked"):
        assert reasons[forged].startswith("bad signature for user"), forged
        assert "another scope" in reasons[forged]
    for junk in ("junk", "truncated", "not a str"):
        assert reasons[junk].startswith("not a django-sesame token"), junk
    assert result["authenticate_many"] == ["principal"] + [None] * (len(reasons) - 1)
    for token in result["tokens"]:
        assert not any(token in (reason or "") for reason in reasons.values())
        assert token not in result["log"]


def sidecar_reasons(username: str, inactive: str) -> dict:
    """Refusals of every kind in one batch: the reasons, and the query count."""
    import logging
    import time
    from unittest import mock

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from sesame.tokens_v2 import create_token

    from wsserver.auth import Authenticator, Refused
    from wsserver.config import get_config

    scope = get_config().sesame_scope
    auth = Authenticator(scope)
    auth.content_types.reload()
    User = get_user_model()
    user = User._default_manager.get(**{User.USERNAME_FIELD: username})
    good = create_token(user, scope)
    ghost = User(password=user.password)
    ghost.pk = uuid.uuid4() if isinstance(user.pk, uuid.UUID) else 987_654_321
    with mock.patch("time.time", return_value=time.time() - 3600):
        expired = create_token(user, scope)
    revoked_user = User(pk=user.pk, password=user.password[:-4] + "AAAA")
    tokens = {
        "good": good,
        "expired": expired,
        "unknown user": create_token(ghost, scope),
        "inactive user": create_token(
            User._default_manager.get(**{User.USERNAME_FIELD: inactive}), scope
        ),
        "default scope": create_token(user, ""),
        "another scope": create_token(user, "another"),
        "bad signature": good[:-1] + ("A" if good[-1] != "A" else "B"),
        "revoked": create_token(revoked_user, scope),
        "junk": "not a token!",
        "truncated": good[:-3],
        "not a str": None,
    }
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.DEBUG)
    with CaptureQueriesContext(connection) as queries:
        results = auth.authenticate_explained(list(tokens.values()))
    many = auth.authenticate_many(list(tokens.values()))
    return {
        "queries": len(queries),
        "reasons": {
            kind: result.reason if isinstance(result, Refused) else None
            for kind, result in zip(tokens, results, strict=True)
        },
        "authenticate_many": [None if p is None else "principal" for p in many],
        "tokens": [t for t in tokens.values() if isinstance(t, str) and len(t) > 8],
        "log": "\n".join(records),
    }
