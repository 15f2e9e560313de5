"""Throwaway servers for fault tests: killed and restarted at will.

Fault tests never touch the shared Redis and PostgreSQL: each starts its own
instance on a free port, in a temporary directory, and removes it afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile

import psycopg
import redis
from processes import free_port
from waiting import wait_for


class ThrowawayRedis:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> ThrowawayRedis:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.answers, 10, "throwaway Redis", self.process)
        return self

    def answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


def _as_postgres(*command: str) -> list[str]:
    return (
        ["runuser", "-u", "postgres", "--", *command]
        if os.getuid() == 0
        else [*command]
    )


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own (initdb), trusting local connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="wsserver-pg-")
        self.data = os.path.join(self.directory, "data")
        if os.getuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, role: str = "postgres", password: str = "") -> str:
        credentials = f"{role}:{password}" if password else role
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def init(self) -> ThrowawayPostgres:
        subprocess.run(
            _as_postgres(
                _pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres"
            ),
            check=True,
            capture_output=True,
        )
        return self.start()

    def start(self) -> ThrowawayPostgres:
        subprocess.run(
            _as_postgres(
                _pg_bin("pg_ctl"),
                "-D",
                self.data,
                "-l",
                os.path.join(self.directory, "log"),
                "-o",
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )
        wait_for(self.answers, 20, "throwaway PostgreSQL")
        return self

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(_pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"),
            capture_output=True,
        )
        wait_for(lambda: not self.answers(), 10, "throwaway PostgreSQL stopped")

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as connection:
            connection.execute(sql)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
