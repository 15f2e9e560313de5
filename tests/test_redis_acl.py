"""The Redis ACL users of docs/redis.md: enough for each side, and no more.

A real main site and a real sidecar log in to Redis as the users that
wsserver.wire's rules make, through a proxy that records every command they
send, on a channel whose name is full of glob characters: admin changes,
resumes and revocation work, Redis refuses them nothing, every rule is used,
and each user is refused what belongs to the other side or to nobody. Then a
TLS Redis with the documentation's own ACL SETUSER lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from clients import (
    assert_no_event,
    closed_with,
    publish_like_the_publisher,
    receive_event,
)
from processes import ROOT, MainSite, SidecarProcess, free_port
from redis_users import server_of
from waiting import wait_for

from wsserver.wire import (
    PUBLISH_WITH_HISTORY,
    acl_setuser,
    control_channel,
    history_key,
    publisher_acl,
    sidecar_acl,
)

pytestmark = pytest.mark.e2e

# A site's own channel, with every glob character: an unescaped rule would
# also grant SIBLING (``*`` matches "zz", ``?`` "-", ``[ab]`` "b").
CHANNEL = f"acl-{os.getpid()}-*?[ab]"
SIBLING = f"acl-{os.getpid()}-zz-b"
DOC = ROOT / "docs" / "redis.md"
RULES = {"publisher": publisher_acl, "sidecar": sidecar_acl}

# Sent on connecting, needing no rule: HELLO with AUTH is allowed to every
# user; redis-py ignores a refused CLIENT MAINT_NOTIFICATIONS (and CLIENT
# SETINFO, which Redis 7.0 does not know).
NO_RULE_NEEDED = {"hello", "auth", "client|maint_notifications", "client|setinfo"}


def user_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).username or "")


def granted(rules: list[str]) -> set[str]:
    return {rule[1:] for rule in rules if rule.startswith("+")}


class Recorder:
    """A TCP proxy in front of Redis: what each ACL user's clients send."""

    CONTAINERS = {"acl", "client", "config", "object", "script", "xinfo", "pubsub"}

    def __init__(self, redis_url: str) -> None:
        self.target = server_of(redis_url)
        self.port = free_port()
        self.sent: dict[str, set[str]] = defaultdict(set)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, url: str) -> str:
        """``url`` through the proxy."""
        parts = urllib.parse.urlsplit(url)
        credentials = parts.netloc.rsplit("@", 1)[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> Recorder:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", self.port), self._loop
        ).result(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _relay(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        user = ["default"]

        async def commands():
            buffer = b""
            while data := await reader.read(65536):
                upstream_writer.write(data)
                buffer += data
                while (parsed := _command(buffer)) is not None:
                    args, buffer = parsed
                    self._record(user, [arg.decode(errors="replace") for arg in args])

        async def replies():
            while data := await upstream_reader.read(65536):
                writer.write(data)

        tasks = [asyncio.create_task(commands()), asyncio.create_task(replies())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for stream in (writer, upstream_writer):
            stream.close()

    def _record(self, user: list[str], args: list[str]) -> None:
        name = args[0].lower()
        if name == "auth" and len(args) == 3:
            user[0] = args[1]
        elif name == "hello" and "auth" in (arg.lower() for arg in args):
            user[0] = args[[arg.lower() for arg in args].index("auth") + 1]
        if name in self.CONTAINERS and len(args) > 1:
            name = f"{name}|{args[1].lower()}"
        self.sent[user[0]].add(name)


def _command(buffer: bytes) -> tuple[list[bytes], bytes] | None:
    """The first complete RESP command in ``buffer`` and what follows, if any."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    end = buffer.index(b"\r\n")
    position, args = end + 2, []
    for _ in range(int(buffer[1:end])):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        length = int(buffer[position + 1 : end])
        start = end + 2
        if len(buffer) < start + length + 2:
            return None
        args.append(buffer[start : start + length])
        position = start + length + 2
    return args, buffer[position:]


@pytest.fixture(scope="module")
def admin_redis(redis_url):
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="module")
def users(redis_acl_users) -> dict[str, str]:
    """The two users for CHANNEL, on the shared Redis: their URLs."""
    return {kind: redis_acl_users.create(kind, CHANNEL) for kind in RULES}


@pytest.fixture(scope="module")
def rules(redis_acl_users, users) -> dict[str, list[str]]:
    db = int(urllib.parse.urlsplit(users["sidecar"]).path.lstrip("/"))
    return {kind: redis_acl_users.rules(kind, CHANNEL, db) for kind in RULES}


@pytest.fixture(scope="module")
def recorder(redis_url):
    proxy = Recorder(redis_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def site(users, recorder, redis_url, tmp_path_factory):
    database = tmp_path_factory.mktemp("acl") / "site.sqlite3"
    main_site = MainSite(
        f"sqlite:///{database}", recorder.url(users["publisher"]), CHANNEL
    )
    assert main_site.env["WSSERVER_REDIS_URL"] == recorder.url(users["publisher"])
    yield main_site.prepare()  # serving HTTP as live_site
    redis.Redis.from_url(redis_url).delete(history_key(CHANNEL))


@pytest.fixture(scope="module")
def sidecar(site, users, recorder, tmp_path_factory):
    process = SidecarProcess.for_site(
        site,
        tmp_path_factory.mktemp("sidecar"),
        REDIS_URL=recorder.url(users["sidecar"]),
    ).start()
    assert process.env["REDIS_URL"] == recorder.url(users["sidecar"])
    yield process
    assert process.stop() == 0
    assert "NOPERM" not in process.log()


def refused(admin_redis, users) -> list[dict]:
    """What Redis refused the users, but what redis-py ignores (see above)."""
    names = {user_of(url) for url in users.values()}
    return [
        entry
        for entry in admin_redis.acl_log(count=128)
        if entry["username"] in names and entry["object"] not in NO_RULE_NEEDED
    ]


def pk_of(site: MainSite, model: str, **lookup: str) -> str:
    code = (
        f"from django.apps import apps; "
        f"print(apps.get_model({model!r}).objects.get(**{lookup!r}).pk)"
    )
    return site.manage("shell", "--verbosity", "0", "-c", code).strip()


async def resume(sidecar: SidecarProcess, token: str, last_event_id: str):
    hello = json.dumps({"token": token, "last_event_id": last_event_id})
    return await sidecar.connect(hello)


# The two sides at work, as their users


async def test_an_admin_change_reaches_a_client_then_a_resume_replays_the_history(
    site, sidecar, admin, admin_redis, users
):
    alice = await sidecar.connect(site.token("alice"))  # view_article only
    admin.add("article", title="Live", body="x")
    seen = await receive_event(alice)
    assert seen["object"] == "Live"
    await alice.close()

    admin.add("article", title="Missed 1", body="x")
    admin.add("product", name="Not for alice", price="1")
    admin.add("article", title="Missed 2", body="x")
    alice = await resume(sidecar, site.token("alice"), seen["id"])
    assert [(await receive_event(alice))["object"] for _ in range(2)] == [
        "Missed 1",
        "Missed 2",
    ]
    await assert_no_event(alice)
    await alice.close()
    assert refused(admin_redis, users) == []


async def test_more_missed_than_the_history_holds_is_a_gap(
    site, sidecar, admin, admin_redis, users, tmp_path
):
    small = SidecarProcess.for_site(
        site, tmp_path, REDIS_URL=sidecar.env["REDIS_URL"], WS_HISTORY_SIZE="2"
    ).start()
    try:
        superuser = await small.connect(site.token("admin"))
        admin.add("article", title="Last seen", body="x")
        last = await receive_event(superuser)
        await superuser.close()
        for number in range(3):
            admin.add("article", title=f"Too many {number}", body="x")
        superuser = await resume(small, site.token("admin"), last["id"])
        gap = await receive_event(superuser)
        assert gap == {"type": "resume_gap", "last_event_id": last["id"]}
        await superuser.close()
    finally:
        assert small.stop() == 0
    assert "NOPERM" not in small.log()
    assert refused(admin_redis, users) == []


async def test_deactivating_a_user_closes_their_connection(
    site, sidecar, admin, admin_redis, users
):
    bob = await sidecar.connect(site.token("bob"))
    status, _ = admin.submit_form(
        f"/admin/auth/user/{pk_of(site, 'auth.User', username='bob')}/change/",
        {"is_active": None},
    )
    assert status == 200
    assert await closed_with(bob, timeout=2) == (1008, "access revoked")
    assert refused(admin_redis, users) == []


def check(sidecar: SidecarProcess) -> subprocess.CompletedProcess:
    """``python -m wsserver check`` with the sidecar's environment."""
    return subprocess.run(
        [sys.executable, "-m", "wsserver", "check"],
        env=sidecar.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wsserver_check_answers_as_the_sidecar_user(sidecar, admin_redis, users):
    result = check(sidecar)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"redis: redis://{user_of(users['sidecar'])}:***@" in result.stdout
    assert result.stdout.strip().endswith("OK")
    assert refused(admin_redis, users) == []


async def test_every_rule_is_used_and_nothing_else_is_sent(
    site, sidecar, admin, rules, users, recorder, admin_redis
):
    """What the components send, recorded by the proxy, is what is granted.

    Made to happen here (the other tests need not run): an event, a control
    message, a resume and ``wsserver check``.
    """
    superuser = await sidecar.connect(site.token("admin"))
    admin.add("article", title="Recorded", body="x")
    first = await receive_event(superuser)
    admin.add("article", title="Recorded too", body="x")
    await receive_event(superuser)
    await superuser.close()
    superuser = await resume(sidecar, site.token("admin"), first["id"])
    assert (await receive_event(superuser))["object"] == "Recorded too"
    await superuser.close()
    dave = pk_of(site, "auth.User", username="dave")
    admin.submit_form(f"/admin/auth/user/{dave}/change/", {})  # a control message
    assert check(sidecar).returncode == 0  # PING, as the health check does

    # Not seen on the wire: the script's own commands, and loading the script
    # when Redis lacks it (test_tls_... shows both). XREVRANGE: only when a
    # resume reads from the newest end to count what it missed.
    unseen = {
        "publisher": {"xadd", "script|load"},
        "sidecar": {"xrevrange"},
    }
    for kind, url in users.items():
        sent = recorder.sent[user_of(url)]
        assert sent - granted(rules[kind]) <= NO_RULE_NEEDED, kind
        assert granted(rules[kind]) - sent <= unseen[kind], kind
    assert refused(admin_redis, users) == []


# Refused


@pytest.fixture(scope="module")
def as_user(redis_acl_users):
    """Clients of users of one's own, so that the components' ACL LOG stays
    clean."""
    return {
        kind: redis.Redis.from_url(redis_acl_users.create(kind, CHANNEL))
        for kind in RULES
    }


def refusals(client: redis.Redis, *command) -> str:
    with pytest.raises(redis.ResponseError) as refusal:
        client.execute_command(*command)
    return str(refusal.value)


NOBODY_MAY = [
    ("GET", "other"),
    ("SET", "other", "x"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("DEL", history_key(CHANNEL)),
    ("XTRIM", history_key(CHANNEL), "MAXLEN", "0"),
    ("XDEL", history_key(CHANNEL), "1-1"),
    ("EVAL", "return 1", "0"),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("ACL", "LIST"),
    ("CLIENT", "LIST"),
    ("MONITOR",),
    ("SCRIPT", "FLUSH"),
    ("PSUBSCRIBE", "*"),
]
SIDECAR_MAY_NOT = [
    *NOBODY_MAY,
    ("PUBLISH", CHANNEL, "{}"),
    ("PUBLISH", control_channel(CHANNEL), "{}"),
    ("XADD", history_key(CHANNEL), "*", "event", "{}"),
    ("XRANGE", history_key(SIBLING), "-", "+"),
    ("XREAD", "STREAMS", history_key(CHANNEL), "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("EVALSHA", "0" * 40, "0"),
]
PUBLISHER_MAY_NOT = [
    *NOBODY_MAY,
    ("XRANGE", history_key(CHANNEL), "-", "+"),
    ("XREVRANGE", history_key(CHANNEL), "+", "-"),
    ("XREAD", "STREAMS", history_key(CHANNEL), "0"),
    ("XLEN", history_key(CHANNEL)),
    ("XINFO", "STREAM", history_key(CHANNEL)),
    ("SUBSCRIBE", CHANNEL),
    ("SUBSCRIBE", control_channel(CHANNEL)),
    ("PUBLISH", SIBLING, "{}"),
    ("XADD", history_key(SIBLING), "*", "event", "{}"),
    ("PING",),
]


def command_id(command: tuple[str, ...]) -> str:
    """The same in every process (pytest-xdist's workers compare them)."""
    return " ".join(command).replace(CHANNEL, "CHANNEL").replace(SIBLING, "SIBLING")


@pytest.mark.parametrize("command", SIDECAR_MAY_NOT, ids=command_id)
def test_the_sidecar_user_may_not(as_user, command):
    assert "no permissions" in refusals(as_user["sidecar"], *command)


@pytest.mark.parametrize("command", PUBLISHER_MAY_NOT, ids=command_id)
def test_the_publisher_user_may_not(as_user, command):
    assert "no permissions" in refusals(as_user["publisher"], *command)


def test_a_script_runs_with_the_publishers_rights_only(as_user, redis_url):
    publisher = as_user["publisher"]
    key = history_key(CHANNEL)
    reader = publisher.register_script("return redis.call('XRANGE', KEYS[1], '-', '+')")
    with pytest.raises(redis.ResponseError, match="can't run this command"):
        reader(keys=[key])
    # The event script itself, sent to a channel not its own: refused, but
    # after the XADD (scripts are not rolled back).
    script = publisher.register_script(PUBLISH_WITH_HISTORY)
    with pytest.raises(redis.ResponseError, match="can't publish to the channel"):
        script(keys=[key], args=["{}", 10, SIBLING])
    redis.Redis.from_url(redis_url).delete(key)


def test_the_users_may_do_their_part(as_user, redis_url):
    publisher, sidecar = as_user["publisher"], as_user["sidecar"]
    key = history_key(CHANNEL)
    try:
        event_id = publish_like_the_publisher(
            publisher, CHANNEL, {"content_type_id": 1}
        )
        nobody = json.dumps({"type": "users", "user_ids": []})
        assert publisher.publish(control_channel(CHANNEL), nobody) >= 0
        assert sidecar.xinfo_stream(key)["last-generated-id"].decode() == event_id
        [(entry_id, _)] = sidecar.xrange(key, "-", "+")
        assert sidecar.xrevrange(key, "+", "-", count=1)[0][0] == entry_id
        assert sidecar.ping()
        subscription = sidecar.pubsub()
        subscription.subscribe(CHANNEL, control_channel(CHANNEL))
        for _ in range(2):
            assert subscription.get_message(timeout=2)["type"] == "subscribe"
        subscription.close()
    finally:
        redis.Redis.from_url(redis_url).delete(key)


# A name, and names that it matches as a glob pattern.
SIBLINGS = {
    "a*": ["abc", "a"],
    "a?": ["ab"],
    "a[b]": ["ab"],
    "a[b-d]": ["ac"],
    "a[!x]": ["a!", "ax"],
    "a\\*": ["a*"],  # a, backslash, star: unescaped, matches "a*"
}


@pytest.mark.parametrize("name", SIBLINGS)
def test_channel_names_are_escaped_in_the_rules(admin_redis, redis_acl_users, name):
    """A name grants only itself, not what it matches as a glob pattern."""
    user = f"wsserver-test-{os.getpid()}-escape"
    for kind in RULES:
        rules = redis_acl_users.rules(kind, name, 0)
        admin_redis.execute_command(*acl_setuser(user, "x", rules))
        try:
            if kind == "publisher":
                use = [
                    ("PUBLISH", name, "x"),
                    ("XADD", f"{name}:history", "*", "a", "b"),
                ]
            else:
                use = [("SUBSCRIBE", name), ("XRANGE", f"{name}:history", "-", "+")]
            for command, target, *rest in use:
                assert dryrun(admin_redis, user, command, target, *rest) == "OK"
                for sibling in SIBLINGS[name]:
                    other = target.replace(name, sibling)
                    answer = dryrun(admin_redis, user, command, other, *rest)
                    assert "no permissions to access" in answer, (command, other)
        finally:
            admin_redis.execute_command("ACL", "DELUSER", user)


def dryrun(client: redis.Redis, user: str, *command: str) -> str:
    try:
        answer = client.execute_command("ACL", "DRYRUN", user, *command)
    except redis.ResponseError as exc:  # Redis 7.0 answers NOPERM as an error
        return str(exc)
    return answer.decode() if isinstance(answer, bytes) else str(answer)


# The documentation


def doc_lines() -> dict[str, str]:
    """The ACL SETUSER lines of docs/redis.md, by user."""
    return {
        line.split()[2]: line
        for line in DOC.read_text().splitlines()
        if line.startswith("ACL SETUSER ")
    }


def test_the_docs_acl_lines_are_the_functions_output():
    expected = {
        "wsserver-publisher": publisher_acl("events", 1),
        "wsserver-sidecar": sidecar_acl("events", 1),
    }
    assert doc_lines() == {
        user: " ".join(acl_setuser(user, "PASSWORD", rules))
        for user, rules in expected.items()
    }, "docs/redis.md's ACL SETUSER lines are stale: paste the functions' output"


class TlsRedis:
    """A throwaway Redis on TLS only, with a CA and certificate of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.ca = directory / "ca.pem"
        self.process: subprocess.Popen | None = None

    def _openssl(self, *args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=self.directory, check=True, capture_output=True
        )

    def start(self) -> TlsRedis:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl(
            "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=wsserver test CA",
            # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a CA's key
            # usage, and the server certificate's authority key identifier.
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self._openssl(
            "req", *ec, "-keyout", "redis.key", "-out", "redis.csr",
            "-subj", "/CN=localhost",
        )  # fmt: skip
        (self.directory / "san.ext").write_text(
            "subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        self._openssl(
            "x509", "-req", "-in", "redis.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-out", "redis.pem", "-days", "1",
            "-extfile", "san.ext",
        )  # fmt: skip
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", "0", "--tls-port", str(self.port)),
                *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--tls-cert-file", str(self.directory / "redis.pem")),
                *("--tls-key-file", str(self.directory / "redis.key")),
                *("--tls-ca-cert-file", str(self.ca)),
                *("--tls-auth-clients", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.answers, 10, "TLS Redis", self.process)
        return self

    def url(self, credentials: str = "", ca: bool = True) -> str:
        query = f"?ssl_ca_certs={self.ca}" if ca else ""
        at = f"{credentials}@" if credentials else ""
        return f"rediss://{at}127.0.0.1:{self.port}/1{query}"

    def answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url(), socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


async def test_tls_and_the_docs_users_on_a_fresh_redis(site, redis_acl_users, tmp_path):
    """The documentation's lines as they are, on database 1, over TLS."""
    tls = TlsRedis(tmp_path).start()
    sidecar = None
    try:
        admin = redis.Redis.from_url(tls.url())
        password = "doc-password-0123456789"
        for line in doc_lines().values():
            command = line.replace(">PASSWORD", f">{password}").split()
            if not redis_acl_users.client_setinfo():  # Redis 7.0, 7.1
                command.remove("+client|setinfo")
            admin.execute_command(*command)
        sidecar = SidecarProcess(
            tmp_path,
            DATABASE_URL=site.env["DATABASE_URL"],
            REDIS_URL=tls.url(f"wsserver-sidecar:{password}"),
            WS_CHANNEL="events",
        ).start()
        superuser = await sidecar.connect(site.token("admin"))
        publisher = redis.Redis.from_url(tls.url(f"wsserver-publisher:{password}"))
        event = {"content_type_id": 1, "over": "tls"}
        first = publish_like_the_publisher(publisher, "events", event)
        assert await receive_event(superuser) == {"id": first, **event}
        await superuser.close()
        second = publish_like_the_publisher(publisher, "events", event)
        superuser = await resume(sidecar, site.token("admin"), first)
        assert await receive_event(superuser) == {"id": second, **event}
        await superuser.close()

        # A fresh Redis lacked the script: the publisher loaded it, and the
        # script's XADD went into the history (which it cannot read).
        assert admin.info("commandstats")["cmdstat_script|load"]["calls"] == 1
        assert admin.xlen("events:history") == 2
        assert [
            entry
            for entry in admin.acl_log(count=128)
            if entry["object"] not in NO_RULE_NEEDED
        ] == []
        # The certificate is verified: without the CA, it is refused.
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(tls.url(ca=False), socket_timeout=2).ping()
    finally:
        if sidecar is not None:
            assert sidecar.stop() == 0
        tls.stop()
    assert "NOPERM" not in sidecar.log()


def test_stale_users_of_dead_sessions_are_deleted(admin_redis, redis_acl_users):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    name = f"wsserver-test-{dead.pid}-sidecar-stale"
    alive = f"wsserver-test-{os.getpid()}-sidecar-alive"
    for user in (name, alive):
        admin_redis.execute_command("ACL", "SETUSER", user, "off")
    try:
        redis_acl_users.delete_stale()
        users = {user.decode() for user in admin_redis.execute_command("ACL", "USERS")}
        assert name not in users and alive in users
    finally:
        admin_redis.execute_command("ACL", "DELUSER", name, alive)
