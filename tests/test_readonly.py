"""The sidecar never writes to the main site's database.

It opens the database read-only by the backend's vendor (PostgreSQL, SQLite,
MySQL/MariaDB), refuses to start on a database it cannot open read-only, and
its Django project refuses every management command that could write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from processes import ROOT, SECRET_KEY, MainSite, SidecarProcess
from waiting import units

from authproject.readonly.refusal import MESSAGE
from wsserver.config import ConfigError, load_config
from wsserver.djangosettings import (
    database_vendor,
    read_only_database,
    read_only_problem,
)

BASE = {"SECRET_KEY": "s3cret"}
# A path with every character that means something in a URI.
AWKWARD = "we?ird #dir %41/site ?#%20 b.sqlite3"


def config_for(database_url: str, engine: str | None = None):
    """A Config on this database, its ENGINE replaced by ``engine`` if given."""
    config = load_config({**BASE, "DATABASE_URL": database_url})
    if engine is not None:
        config = dataclasses.replace(
            config, database={**config.database, "ENGINE": engine}
        )
    return config


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + urllib.parse.quote(str(path))


def sidecar_project(code: str, **env: str) -> subprocess.CompletedProcess:
    """Python code run with the sidecar's Django project (settings_auth)."""
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings_auth",
        "SECRET_KEY": SECRET_KEY,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=units(60),
    )


# The settings produced for each vendor


@pytest.mark.parametrize(
    "engine", ["django.db.backends.postgresql", "readonly_backends.renamed"]
)
def test_postgresql_sessions_are_read_only(engine):
    database = read_only_database(
        config_for("postgres://u:p@h/db?options=-c%20search_path%3Dsite", engine)
    )
    assert database["OPTIONS"]["options"] == (
        "-c search_path=site -c default_transaction_read_only=on"
    )
    assert database["OPTIONS"]["connect_timeout"] == 5
    assert database["ENGINE"] == engine


@pytest.mark.parametrize(
    "engine", ["django.db.backends.sqlite3", "readonly_backends.sqlite_fork"]
)
def test_sqlite_is_opened_as_a_read_only_uri(engine, tmp_path):
    path = tmp_path / AWKWARD
    database = read_only_database(config_for(sqlite_url(path), engine))
    quoted = urllib.parse.quote(str(path))
    assert database["NAME"] == f"file:{quoted}?mode=ro"
    assert "%3F" in quoted and "%23" in quoted and "%25" in quoted
    assert database["OPTIONS"]["uri"] is True
    # SQLite itself opens that very file, and only for reading.
    path.parent.mkdir()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (42)")
    connection.close()
    readonly = sqlite3.connect(database["NAME"], uri=True)
    try:
        assert readonly.execute("SELECT x FROM t").fetchall() == [(42,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            readonly.execute("INSERT INTO t VALUES (1)")
    finally:
        readonly.close()
    assert {p.name for p in tmp_path.rglob("*")} == {path.parent.name, path.name}


def test_a_relative_sqlite_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = read_only_database(config_for("sqlite:///site%20db.sqlite3"))
    quoted = urllib.parse.quote(str(tmp_path))
    assert database["NAME"] == f"file:{quoted}/site%20db.sqlite3?mode=ro"


def test_an_sqlite_uri_keeps_its_parameters_but_is_read_only():
    config = config_for("sqlite:////tmp/site.db")
    config = dataclasses.replace(
        config,
        database={**config.database, "NAME": "file:/tmp/site.db?mode=rwc&cache=shared"},
    )
    assert read_only_database(config)["NAME"] == (
        "file:/tmp/site.db?cache=shared&mode=ro"
    )


def test_mysql_sessions_are_read_only():
    # mysqlclient is a test dependency (`make test` installs it): no skip.
    plain = read_only_database(config_for("mysql://u:p@h/site"))
    assert plain["OPTIONS"]["init_command"] == "SET SESSION TRANSACTION READ ONLY"
    assert plain["OPTIONS"]["connect_timeout"] == 5
    url = "mysql://u:p@h/site?init_command=" + urllib.parse.quote(
        "SET sql_mode='STRICT_ALL_TABLES';"
    )
    appended = read_only_database(config_for(url))
    assert appended["OPTIONS"]["init_command"] == (
        "SET sql_mode='STRICT_ALL_TABLES'; SET SESSION TRANSACTION READ ONLY"
    )


@pytest.mark.parametrize(
    ("engine", "vendor"),
    [
        ("django.contrib.gis.db.backends.postgis", "postgresql"),
        ("django.contrib.gis.db.backends.spatialite", "sqlite"),
    ],
)
def test_gis_backends_are_read_only_like_their_vendor(engine, vendor):
    try:
        database_vendor(engine)
    except Exception as exc:
        # Without GDAL (not installed here), the backend cannot load: the
        # sidecar could not use it, and says why.
        problem = read_only_problem({"ENGINE": engine})
        assert problem is not None and problem.startswith("DATABASE_URL:")
        assert engine in problem and " ".join(str(exc).split()) in problem
        return
    assert database_vendor(engine)[0] == vendor
    assert read_only_problem({"ENGINE": engine}) is None


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        # Named like PostgreSQL, the vendor is another: refused.
        ("readonly_backends.postgresql", "is a 'acme' database"),
        # The mysql vendor through a driver that is not mysqlclient.
        ("readonly_backends.other_driver", "through 'mysql.connector'"),
        ("django.db.backends.oracle", "cannot load the database backend"),
        ("no.such.backend", "cannot load the database backend"),
    ],
)
def test_other_databases_are_refused(engine, expected):
    problem = read_only_problem({"ENGINE": engine})
    assert problem is not None
    assert problem.startswith("DATABASE_URL: ")
    assert expected in problem and engine in problem
    assert "read-only" in problem
    assert "PostgreSQL" in problem and "SQLite" in problem and "MySQL" in problem
    with pytest.raises(ConfigError) as raised:
        read_only_database(config_for("postgres://u:p@h/db", engine))
    assert raised.value.problems == [problem]


@pytest.mark.parametrize(
    "engine",
    [
        "django.db.backends.postgresql",
        "django.db.backends.sqlite3",
        "readonly_backends.renamed",
        "readonly_backends.sqlite_fork",
    ],
)
def test_supported_databases_have_no_problem(engine):
    assert read_only_problem({"ENGINE": engine}) is None


@pytest.mark.e2e
@pytest.mark.parametrize("command", [[], ["check"]])
def test_the_sidecar_refuses_to_start_on_a_database_it_cannot_keep_read_only(
    command,
):
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", *command],
        env={
            **environ,
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": "oracle://site:hunter2@db.example.com/site",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "wsserver: invalid configuration:" in result.stderr
    assert "DATABASE_URL: " in result.stderr
    assert "cannot open that database read-only" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


# Real databases


@pytest.mark.e2e
async def test_a_sidecar_on_an_sqlite_path_with_uri_characters(
    tmp_path, redis_url, channel
):
    path = tmp_path / AWKWARD
    path.parent.mkdir()
    site = MainSite(sqlite_url(path), redis_url, channel).prepare()
    before = path.read_bytes()
    token = site.token("alice")
    # The URL `manage.py wsserver_env` gives, as an operator would paste it.
    [database_url] = [
        shlex.split(line)[0].removeprefix("DATABASE_URL=")
        for line in site.manage("wsserver_env").splitlines()
        if line.startswith("DATABASE_URL=")
    ]
    assert database_url == site.env["DATABASE_URL"]
    sidecar = SidecarProcess.for_site(site, tmp_path, DATABASE_URL=database_url).start()
    try:
        websocket = await sidecar.connect(token)
        await sidecar.until_connections(1)
        await websocket.close()
    finally:
        assert sidecar.stop() == 0, sidecar.log()
    assert path.read_bytes() == before
    # Nothing was created next to it (a broken URI opens another file).
    assert {p.name for p in path.parent.iterdir()} == {path.name}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [path.parent.name]


@pytest.mark.e2e
def test_a_mysql_connection_with_the_sidecar_settings_refuses_writes(mysql):
    url = mysql.create("CREATE TABLE probe (x int)", "INSERT INTO probe VALUES (42)")
    init_command = urllib.parse.quote("SET sql_mode='STRICT_ALL_TABLES'")
    result = sidecar_project(
        "import json, django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT x FROM probe')\n"
        "    rows = cursor.fetchall()\n"
        "    cursor.execute('SELECT @@sql_mode')\n"
        "    mode = cursor.fetchone()[0]\n"
        "    errors = []\n"
        "    for sql in ['INSERT INTO probe VALUES (1)', 'CREATE TABLE t (x int)']:\n"
        "        try:\n"
        "            cursor.execute(sql)\n"
        "        except Exception as exc:\n"
        "            errors.append(str(exc))\n"
        "print(json.dumps({'rows': rows, 'mode': mode, 'errors': errors}))\n",
        DATABASE_URL=f"{url}?init_command={init_command}",
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["rows"] == [[42]]  # reading works
    assert "STRICT_ALL_TABLES" in outcome["mode"]  # the URL's init_command ran
    assert len(outcome["errors"]) == 2
    assert all("READ ONLY transaction" in error for error in outcome["errors"])


@pytest.mark.e2e
def test_a_token_verifies_on_mysql(mysql, redis_url, channel):
    site = MainSite(mysql.create(), redis_url, channel).prepare()
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "--token", "-"],
        env={
            **environ,
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": site.env["DATABASE_URL"],
            "REDIS_URL": redis_url,
        },
        cwd=ROOT,
        input=site.token("alice") + "\n",
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "token: valid for user" in result.stdout


# Management commands

# Commands of the stripped-down project that cannot change the database (nor
# write files or send mail). Every other command must be refused.
READ_ONLY_COMMANDS = {
    "check": [],
    "diffsettings": [],
    "dumpdata": ["auth"],
    "inspectdb": ["auth_user"],
    # Python with the ORM on a read-only connection.
    "shell": [
        "-c",
        "from django.contrib.auth.models import Group as G; G.objects.count()",
    ],
    "showmigrations": [],
    "sqlflush": [],
    "sqlmigrate": ["auth", "0001"],
    "sqlsequencereset": ["auth"],
}


@pytest.fixture(scope="module")
def site_file(site) -> Path:
    """The SQLite file of the module's site (alone in its directory)."""
    url = site.env["DATABASE_URL"]
    return Path(urllib.parse.unquote(url.removeprefix("sqlite:///")))


def django_admin(site: MainSite, *args: str) -> subprocess.CompletedProcess:
    """``python -m django ARGS`` with the sidecar's settings, on the site's
    database."""
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings_auth",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": site.env["DATABASE_URL"],
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=environ,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=units(60),
    )


def all_commands(site: MainSite) -> dict[str, str]:
    """Every management command of the sidecar's project, and its app."""
    result = sidecar_project(
        "import json, django; django.setup()\n"
        "from django.core.management import get_commands\n"
        "print(json.dumps(get_commands()))\n",
        DATABASE_URL=site.env["DATABASE_URL"],
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_every_command_that_could_write_is_refused(site, site_file):
    path = site_file
    before = digest(path)
    commands = all_commands(site)
    assert set(READ_ONLY_COMMANDS) <= set(commands)
    wrong = []
    for command, app in sorted(commands.items()):
        if command in READ_ONLY_COMMANDS:
            if app == "authproject.readonly":
                wrong.append(f"{command}: allowed, but refused")
            continue
        result = django_admin(site, command)
        if (
            app != "authproject.readonly"
            or result.returncode != 1
            or MESSAGE not in result.stderr
        ):
            wrong.append(
                f"{command} (from {app}): exit status {result.returncode}, "
                f"{(result.stderr or result.stdout).strip()[-200:]!r}"
            )
    assert not wrong, "not refused:\n" + "\n".join(wrong)
    assert digest(path) == before


@pytest.mark.e2e
def test_the_read_only_commands_work_and_write_nothing(site, site_file):
    path = site_file
    before = digest(path)
    for command, args in READ_ONLY_COMMANDS.items():
        result = django_admin(site, command, *args)
        assert result.returncode == 0, f"{command}: {result.stderr}"
    assert digest(path) == before
    assert {p.name for p in path.parent.iterdir()} == {path.name}


@pytest.mark.e2e
def test_a_refused_command_says_which_and_why():
    result = sidecar_project(
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(['manage.py', 'changepassword', 'admin'])\n",
        DATABASE_URL="sqlite:////nonexistent/site.sqlite3",
    )
    assert result.returncode == 1
    assert result.stderr == f"CommandError: changepassword is refused. {MESSAGE}\n"


_DATABASE_URLS = """
import json
from django.core.management.base import CommandError
from wsserver.publisher.management.commands.wsserver_env import database_url

def url(vendor, **database):
    try:
        return database_url(vendor, {"ENGINE": "x.y", **database}, lambda s: "*")
    except CommandError as exc:
        return f"CommandError: {exc}"

print(json.dumps([
    url("postgresql", ENGINE="django.contrib.gis.db.backends.postgis",
        NAME="site", USER="app", PASSWORD="p", HOST="/run/postgresql", PORT=""),
    url("sqlite", ENGINE="django.contrib.gis.db.backends.spatialite",
        NAME="/srv/a?b#c%d.db"),
    url("mysql", NAME="site", USER="app", PASSWORD="", HOST="db", PORT=3306),
    url("oracle", ENGINE="django.db.backends.oracle", NAME="site"),
]))
"""


@pytest.mark.e2e
def test_wsserver_env_names_the_database_by_vendor(site):
    postgis, spatialite, mysql, oracle = json.loads(
        site.manage("shell", "--verbosity=0", "-c", _DATABASE_URLS)
    )
    # The sidecar opens them with the plain backends, without GDAL.
    assert postgis == "postgresql://app:*@%2Frun%2Fpostgresql/site"
    assert spatialite == "sqlite:////srv/a%3Fb%23c%25d.db"
    assert mysql == "mysql://app@db:3306/site"
    assert oracle.startswith("CommandError: unsupported database engine")
    assert "read-only" in oracle
    engines = [
        load_config({**BASE, "DATABASE_URL": url}).database["ENGINE"]
        for url in [postgis, spatialite, mysql]
    ]
    assert engines == [
        "django.db.backends.postgresql",
        "django.db.backends.sqlite3",
        "django.db.backends.mysql",
    ]
    parsed = load_config({**BASE, "DATABASE_URL": spatialite}).database
    assert parsed["NAME"] == "/srv/a?b#c%d.db"
    parsed = load_config({**BASE, "DATABASE_URL": postgis}).database
    assert parsed["HOST"] == "/run/postgresql"
