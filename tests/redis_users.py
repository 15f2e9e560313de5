"""Redis ACL users for the tests, with the rules of docs/redis.md.

Every main site and sidecar on the shared Redis runs as the ACL user of its
side, made for its channel: MainSite as the publisher, Sidecar as the sidecar
(see processes.py). The users have unique names and random passwords; they are
deleted at the end of the session, and those of dead sessions at the start.
Throwaway Redis servers (faults.py) are left alone: they keep no users across
a restart.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
import uuid

import redis

from wsserver.wire import acl_setuser, publisher_acl, sidecar_acl

REDIS_URL = os.environ.get("WSSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = "wsserver-test-"
RULES = {"publisher": publisher_acl, "sidecar": sidecar_acl}


def server_of(url: str) -> tuple[str | None, int]:
    # The first of a cluster's startup nodes.
    parts = urllib.parse.urlsplit(url.split(",", 1)[0])
    return parts.hostname, parts.port or 6379


def database_of(url: str) -> int:
    return int(urllib.parse.urlsplit(url).path.lstrip("/") or 0)


def with_user(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    credentials = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


class RedisUsers:
    """ACL users made on one Redis server, through an unrestricted URL."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: dict[str, tuple[str, str]] = {}  # user: (kind, channel)
        self._shared: dict[tuple[str, int, str], str] = {}  # (kind, db, channel)
        self._client_setinfo: bool | None = None

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.admin_url)

    def client_setinfo(self) -> bool:
        """Whether the server has CLIENT SETINFO (Redis 7.2+), to allow it."""
        if self._client_setinfo is None:
            version = self.admin().info("server")["redis_version"]
            major, minor = (int(part) for part in version.split(".")[:2])
            self._client_setinfo = (major, minor) >= (7, 2)
        return self._client_setinfo

    def rules(self, kind: str, channel: str, db: int) -> list[str]:
        return RULES[kind](channel, db, client_setinfo=self.client_setinfo())

    def create(self, kind: str, channel: str, db: int | None = None) -> str:
        """A new user of this kind for ``channel``: its URL, on ``db``."""
        url = self.admin_url
        if db is not None:
            url = urllib.parse.urlunsplit(
                urllib.parse.urlsplit(url)._replace(path=f"/{db}")
            )
        user = f"{PREFIX}{os.getpid()}-{kind}-{uuid.uuid4().hex[:8]}"
        password = secrets.token_urlsafe(24)
        rules = self.rules(kind, channel, database_of(url))
        self.admin().execute_command(*acl_setuser(user, password, rules))
        self.created[user] = (kind, channel)
        return with_user(url, user, password)

    def url_for(self, kind: str, url: str, channel: str) -> str:
        """The URL that a main site or sidecar given ``url`` runs with.

        On this server, an unrestricted URL, or one of the other side's
        users, becomes the URL of this side's user for the channel (one per
        database and channel). Any other URL is kept as is.
        """
        if server_of(url) != server_of(self.admin_url):
            return url
        user = _user(url)
        if user in self.created and self.created[user] == (kind, channel):
            return url
        if user not in self.created and user != _user(self.admin_url):
            return url  # a user of the test's own
        key = (kind, database_of(url), channel)
        if key not in self._shared:
            self._shared[key] = self.create(kind, channel, database_of(url))
        return self._shared[key]

    def delete_all(self) -> None:
        if self.created:
            self.admin().execute_command("ACL", "DELUSER", *self.created)
            self.created.clear()
            self._shared.clear()

    def delete_stale(self) -> None:
        """Delete the users that sessions which died left behind."""
        stale = []
        for name in self.admin().execute_command("ACL", "USERS"):
            name = name.decode()
            if name.startswith(PREFIX):
                pid = name[len(PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    stale.append(name)
        if stale:
            self.admin().execute_command("ACL", "DELUSER", *stale)


def _user(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).username or "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


shared = RedisUsers(REDIS_URL)
