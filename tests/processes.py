"""Real processes for end-to-end tests: the example main site and sidecars.

On the shared Redis, each runs as the Redis ACL user of its side for its
channel (redis_users.py): a test that publishes with a site's
WSSERVER_REDIS_URL publishes as the main site may, and no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import redis_users
from clients import authenticate
from waiting import eventually, units, wait_for
from websockets.asyncio.client import ClientConnection

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
# A site with django-guardian, for WSSERVER_MODELS (tests/guardiansite).
GUARDIAN_SITE = ROOT / "tests" / "guardiansite" / "manage.py"
SECRET_KEY = "e2e-test-secret-key-0123456789"
# Tokens made once per module: the sidecars accept them for a day.
LONG_LIVED = {"SESAME_MAX_AGE": "86400"}
PASSWORD = "e2e-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int, avoid: int | None = None) -> int:
    """The first of ``count`` consecutive free ports, none of them ``avoid``.

    For WS_METRICS_PORT with WS_WORKERS: worker n serves on the port + n.
    """
    while True:
        port = free_port()
        wanted = range(port, port + count)
        if avoid in wanted or wanted.stop > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for other in wanted[1:]:
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", other))
            except OSError:
                continue
        return port


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=units(2)) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def run_wsserver(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``python -m wsserver [args]`` in this checkout, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "wsserver", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=units(60),
    )


class MainSite:
    """A main site on a given database: manage.py commands and runserver.

    The example site unless ``manage_py`` names another one's manage.py
    (e.g. GUARDIAN_SITE); it must have ``seed_demo --password`` and
    ``ws_token`` commands. It runs on this Python (and its Django) unless
    ``python`` names another's (tests/test_cross_versions.py).
    """

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        channel: str,
        manage_py: Path = EXAMPLE / "manage.py",
        python: str = sys.executable,
        **env: str,
    ):
        self.manage_py = Path(manage_py)
        self.python = python
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET_KEY,
            "WSSERVER_REDIS_URL": redis_users.shared.url_for(
                "publisher", redis_url, channel
            ),
            "WSSERVER_CHANNEL": channel,
            "DEBUG": "0",
            **env,
        }
        # Each site's manage.py names its settings (tests that set up Django
        # in-process set this variable for their own).
        if "DJANGO_SETTINGS_MODULE" not in env:
            self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.seeded = ""  # what seed_demo printed

    def prepare(self) -> MainSite:
        """Create the tables and the demo users (see seed_demo)."""
        self.manage("migrate", "--noinput")
        self.seeded = self.manage("seed_demo", "--password", PASSWORD)
        return self

    def manage(self, *args: str, check: bool = True, **env: str) -> str:
        result = subprocess.run(
            [self.python, str(self.manage_py), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=units(120),
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def token(self, username: str, **env: str) -> str:
        """A token made on the command line, e.g. for a user who cannot log in."""
        return self.manage("ws_token", username, **env).strip()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.python,
                str(self.manage_py),
                "runserver",
                "--noreload",
                "--insecure",  # serve static files with DEBUG off
                f"127.0.0.1:{self.port}",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: http_status(self.url + "/admin/login/") == 200,
            30,
            "main site",
            self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(units(10))
            self.process = None


class SidecarProcess:
    """``python -m wsserver`` in a subprocess, with its log kept in a file.

    On this Python (and its Django) unless ``python`` names another's.
    """

    def __init__(self, tmp_path: Path, python: str = sys.executable, **env: str):
        self.python = python
        self.port = free_port()
        workers = int(env.get("WS_WORKERS", "1"))
        self.env = {
            **os.environ,
            "SECRET_KEY": SECRET_KEY,
            "WS_HOST": "127.0.0.1",
            "WS_PORT": str(self.port),
            "WS_ALLOWED_ORIGINS": "",
            # One port per worker (a port taken by another process at start-up
            # would stop the sidecar).
            "WS_METRICS_PORT": str(free_ports(workers, avoid=self.port)),
            **env,
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.http = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.env['WS_METRICS_PORT']}/metrics"
        self.log_path = tmp_path / f"sidecar-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def for_site(cls, site: MainSite, tmp_path: Path, **env: str) -> SidecarProcess:
        """A sidecar on the site's database, Redis and channel.

        On the shared Redis, it runs as the sidecar's ACL user (see start).
        """
        shared = {
            "DATABASE_URL": site.env["DATABASE_URL"],
            "REDIS_URL": site.env["WSSERVER_REDIS_URL"],
            "WS_CHANNEL": site.env["WSSERVER_CHANNEL"],
        }
        return cls(tmp_path, **{**shared, **env})

    def start(self, wait_ready: bool = True) -> SidecarProcess:
        # Here, not in __init__: tests may set REDIS_URL (e.g. to their site's)
        # in the meantime.
        if "REDIS_URL" in self.env:
            self.env["REDIS_URL"] = redis_users.shared.url_for(
                "sidecar", self.env["REDIS_URL"], self.env.get("WS_CHANNEL", "events")
            )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [self.python, "-m", "wsserver"],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            try:
                wait_for(
                    lambda: http_status(self.http + "/readyz") == 200,
                    30,
                    f"sidecar on {self.python}",
                    self.process,
                )
            except (RuntimeError, TimeoutError) as exc:
                # The log as it is now, not as it was when the wait began.
                raise type(exc)(f"{exc}; its log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_logged(self, text: str, count: int, timeout: float) -> None:
        """Wait until the log holds ``text`` ``count`` times; fail with the log."""
        try:
            await eventually(
                lambda: self.log().count(text) >= count,
                timeout,
                f"{count} x {text!r} in the sidecar's log",
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its log:\n{self.log()}") from None

    def _metric(self, prefix: str) -> int:
        """The sum of the samples whose line starts with ``prefix``."""
        with urllib.request.urlopen(self.metrics_url, timeout=units(5)) as response:
            lines = response.read().decode().splitlines()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in lines
            if line.startswith(prefix)
        )

    def open_sockets(self) -> int:
        """Sockets the sidecar process holds: clients, Redis, the database."""
        assert self.process is not None
        directory = f"/proc/{self.process.pid}/fd"
        targets = []
        for fd in os.listdir(directory):
            with contextlib.suppress(FileNotFoundError):
                targets.append(os.readlink(f"{directory}/{fd}"))
        return sum(target.startswith("socket:") for target in targets)

    def invalid_bus_messages(self) -> int:
        """Bus and control messages the sidecar skipped."""
        return self._metric('wsserver_bus_events_total{outcome="invalid"}')

    def authentication_outcomes(self) -> int:
        """Tokens the sidecar has decided on so far, whatever the result."""
        return self._metric("wsserver_authentications_total{")

    def connections(self) -> int:
        """Open authenticated connections."""
        return self._metric("wsserver_connections ")

    async def until_connections(self, count: int, timeout: float = 10) -> None:
        """Wait until exactly ``count`` connections are authenticated."""
        await eventually(
            lambda: self.connections() == count, timeout, f"{count} connections"
        )

    async def connect(self, token: str, timeout: float = 10) -> ClientConnection:
        """Connect and send a token, then wait until the sidecar decided on it.

        Once this returns, the connection receives every event published (or
        it was refused): no sleep is needed before publishing.
        """
        before = await asyncio.to_thread(self.authentication_outcomes)
        websocket = await authenticate(self.url, token)
        await eventually(
            lambda: self.authentication_outcomes() > before,
            timeout,
            "the sidecar decided on the token",
            interval=0.01,
        )
        return websocket

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(units(timeout))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(units(timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        self.process = None
        return code


@contextlib.contextmanager
def running(process):
    process.start()
    try:
        yield process
    finally:
        process.stop()


def started_sidecars(site: MainSite, tmp_path_factory, count: int = 2, **env: str):
    """Generator for a fixture: ``count`` sidecars on the site, stopped cleanly."""
    processes = [
        SidecarProcess.for_site(site, tmp_path_factory.mktemp("sidecar"), **env).start()
        for _ in range(count)
    ]
    yield processes
    for process in processes:
        assert process.stop() == 0
