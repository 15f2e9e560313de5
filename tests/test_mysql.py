"""MariaDB (or MySQL) as the main site's database, as PostgreSQL is tested.

The shared MariaDB (`mysql -uroot`, tests/conftest.py's ``mysql`` fixture)
is never stopped: an outage is a TCP proxy in front of it that the test cuts,
and a server that does not answer is a socket that listens and never speaks.
Also here: the connect timeout, and the custom user model (UUID pk, stored
as char(32) on MySQL) end to end. Read-only sessions: test_readonly.py; the
README's GRANTs: test_least_privilege.py; the doctor: test_doctor.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from clients import assert_no_event, authenticate, closed_with, receive_event
from processes import (
    LONG_LIVED,
    ROOT,
    SECRET_KEY,
    MainSite,
    SidecarProcess,
    http_status,
)
from waiting import eventually, units, wait_for

pytestmark = pytest.mark.e2e

CUSTOM_USER = {
    "WS_USER_TABLE": "accounts_user",
    "WS_USER_PK": "uuid",
    "WS_USERNAME_FIELD": "email",
}


class CuttableProxy:
    """A TCP proxy to host:port that a test can cut (every connection closed,
    new ones refused) and restore, on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def start(self) -> CuttableProxy:
        threading.Thread(
            target=self._accept, args=(self.listener,), daemon=True
        ).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, server}
            for source, sink in [(client, server), (server, client)]:
                threading.Thread(
                    target=self._pipe, args=(source, sink), daemon=True
                ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        # shutdown() first: close() alone leaves a blocked accept() accepting.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            sockets, self.sockets = self.sockets, set()
        for end in sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def restore(self) -> None:
        self.listener = self._listen(self.port)
        self.start()

    def close(self) -> None:
        self.cut()


@pytest.fixture(scope="module")
def mysql_site(mysql, redis_url) -> MainSite:
    channel = f"mysql-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return MainSite(mysql.create(), redis_url, channel).prepare()


def through(url: str, port: int) -> str:
    """A mysql://user@127.0.0.1:3306/name URL on another port."""
    scheme, rest = url.split("://", 1)
    credentials, location = rest.split("@", 1)
    database = location.split("/", 1)[1]
    return f"{scheme}://{credentials}@127.0.0.1:{port}/{database}"


# A database outage


async def test_a_database_outage_fails_authentications_cleanly_then_recovers(
    mysql_site, tmp_path
):
    proxy = CuttableProxy("127.0.0.1", 3306).start()
    token = mysql_site.token("admin")
    sidecar = SidecarProcess.for_site(
        mysql_site,
        tmp_path,
        DATABASE_URL=through(mysql_site.env["DATABASE_URL"], proxy.port),
        WS_AUTH_TIMEOUT="3",
        **LONG_LIVED,
    ).start()
    try:
        before = await authenticate(sidecar.url, token)
        await assert_no_event(before, 0.2)

        proxy.cut()
        started = time.monotonic()
        refused = await authenticate(sidecar.url, token)
        assert await closed_with(refused, timeout=5) == (1013, "try again later")
        assert time.monotonic() - started < 3.5  # not past the auth timeout
        assert before.close_code is None  # authenticated connections stay

        proxy.restore()

        async def authenticated():
            websocket = await authenticate(sidecar.url, token)
            try:
                await closed_with(websocket, timeout=0.5)
            except TimeoutError:
                return websocket  # authenticated: the server keeps it open
            return None

        websocket = await eventually(
            authenticated, 5, "authenticated after recovery", interval=0.2
        )
        await websocket.close()
        await before.close()
        assert "Traceback" not in sidecar.log()
    finally:
        assert sidecar.stop() == 0
        proxy.close()


# A server that accepts connections and never answers


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) and never
    sends MariaDB's greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


CONNECT = """
import json, time, django
django.setup()
from django.db import connection
started = time.monotonic()
try:
    connection.ensure_connection()
    outcome = "connected"
except Exception as exc:
    outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
print(json.dumps([time.monotonic() - started, outcome]))
"""


def connect_as_the_sidecar(database_url: str) -> tuple[float, str]:
    """How long the sidecar's settings take to fail to connect, and how."""
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", CONNECT],
        env={
            **environ,
            "DJANGO_SETTINGS_MODULE": "settings_auth",
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": database_url,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=units(60),
    )
    assert result.returncode == 0, result.stderr
    elapsed, outcome = json.loads(result.stdout.splitlines()[-1])
    return elapsed, outcome


@pytest.mark.parametrize(("query", "bound"), [("", 5), ("?connect_timeout=1", 1)])
def test_a_server_that_never_answers_fails_within_the_connect_timeout(
    silent_port, query, bound
):
    elapsed, outcome = connect_as_the_sidecar(
        f"mysql://root@127.0.0.1:{silent_port}/site{query}"
    )
    assert outcome.startswith("django.db.utils.OperationalError"), outcome
    # The bound, and not much less: the timeout is what ended the wait.
    assert bound - 0.5 < elapsed < bound + units(2), (elapsed, outcome)


async def test_a_sidecar_on_a_silent_database_tells_clients_to_try_again(
    silent_port, mysql_site, tmp_path
):
    """Authentications end with 1013 within the connect timeout, not hang."""
    sidecar = SidecarProcess.for_site(
        mysql_site,
        tmp_path,
        DATABASE_URL=through(mysql_site.env["DATABASE_URL"], silent_port)
        + "?connect_timeout=2",
        WS_AUTH_TIMEOUT="8",
        **LONG_LIVED,
    ).start(wait_ready=False)
    try:
        # The start-up schema check gives up after 2 s, and it serves (not
        # ready: /readyz waits for the database, so not asked here).
        wait_for(
            lambda: http_status(sidecar.http + "/healthz") == 200,
            10,
            "sidecar serving",
            sidecar.process,
        )
        assert "Database unavailable at start-up" in sidecar.log()
        started = time.monotonic()
        websocket = await authenticate(sidecar.url, mysql_site.token("admin"))
        assert await closed_with(websocket, timeout=8) == (1013, "try again later")
        assert time.monotonic() - started < 2 + units(3)
    finally:
        assert sidecar.stop() == 0


# The custom user model: a UUID primary key is char(32) on MySQL, uuid on
# MariaDB 10.7+


@pytest.fixture(scope="module")
def custom_site(mysql, redis_url) -> MainSite:
    channel = f"mysql-custom-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    site = MainSite(mysql.create(), redis_url, channel, EXAMPLE_CUSTOM_USER="1")
    return site.prepare()


async def test_a_custom_user_model_with_a_uuid_pk(custom_site, tmp_path):
    # The start-up schema check passes: char(32) is a uuid column.
    sidecar = SidecarProcess.for_site(
        custom_site, tmp_path, **CUSTOM_USER, **LONG_LIVED
    ).start()
    try:
        alice = await sidecar.connect(custom_site.token("alice@example.com"))
        bob = await sidecar.connect(custom_site.token("bob@example.com"))
        carol = await sidecar.connect(custom_site.token("carol@example.com"))
        assert await closed_with(carol) == (1011, "authentication failed")
        # A personal event (by the UUID pk), and one for a permission.
        custom_site.manage(
            "wsserver_publish", "note", "--data", '"hi"', "--user", "alice@example.com"
        )
        assert (await receive_event(alice))["data"] == "hi"
        custom_site.manage(
            "wsserver_publish",
            "articles",
            "--data",
            '"all"',
            "--permission",
            "catalog.view_article",
        )
        assert (await receive_event(alice))["data"] == "all"
        await assert_no_event(bob)  # bob may not view articles
        for websocket in (alice, bob):
            await websocket.close()
    finally:
        assert sidecar.stop() == 0


def test_a_wrong_pk_type_is_reported_at_start_up(custom_site, tmp_path):
    sidecar = SidecarProcess.for_site(
        custom_site, tmp_path, **{**CUSTOM_USER, "WS_USER_PK": "int"}
    )
    sidecar.start(wait_ready=False)
    assert sidecar.wait_exit() == 1
    log = sidecar.log()
    # MariaDB 10.7+ has a uuid type (Django 5.0+ uses it), MySQL char(32).
    assert (
        "accounts_user.id is a UUIDField but WS_USER_PK=int" in log
        or "accounts_user.id is a CharField but WS_USER_PK=int" in log
    ), log
    assert "Set WS_USER_PK=uuid" in log
