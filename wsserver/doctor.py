"""``python -m wsserver check``: is this sidecar configured to work, and why not.

Checks the database tables, Redis and, optionally, one token, without
serving. Each problem is one line that ends with its fix; warnings (a role that
may write, where the README asks for a read-only one) do not fail the check.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import redis
from django.db.utils import Error as DatabaseError

from .config import Config

__all__ = ["check", "explain_token"]

# What `manage.py wsserver_env` prints in place of a secret, unless asked.
MASKED = "********"


def check(config: Config, token: str | None = None, out: Callable = print) -> int:
    """Print what works and what does not; return the exit status (0 or 1)."""
    from .schema import check_user_schema

    problems = [
        f"config: {name} is {MASKED!r}, the placeholder `manage.py wsserver_env` "
        "prints for a secret. Fix: run it with --show-secrets, or set the real value"
        for name, value in [
            ("SECRET_KEY", config.secret_key),
            ("SECRET_KEY_FALLBACKS", ",".join(config.secret_key_fallbacks)),
            ("SESAME_KEY", config.sesame.get("SESAME_KEY") or ""),
            ("the password in DATABASE_URL", config.database.get("PASSWORD") or ""),
            (f"a secret in {config.redis_url_variable}", config.redis_url),
        ]
        if MASKED in value
    ]
    warnings: list[str] = []
    out("configuration: valid" if not problems else "configuration: parsed")
    pk_type = config.user_model.pk_type if config.user_model.custom else "int"
    try:
        schema_problems = check_user_schema(pk_type)
    except DatabaseError as exc:
        problems.append(
            f"database: cannot query {config.summary()['DATABASE_URL']} "
            f"({one_line(exc)}). Fix: check DATABASE_URL and that the "
            "database server is reachable."
        )
    else:
        problems += [f"database: {problem}" for problem in schema_problems]
        unreadable = unreadable_tables(config, skip=schema_problems)
        problems += [f"database: {problem}" for problem in unreadable]
        if not schema_problems and not unreadable:
            out(
                "database: the user tables match the configuration and every "
                "table the sidecar reads is readable"
            )
            warnings += write_warnings(config)
    redis_problem = check_redis(config)
    if redis_problem is None:
        out(
            f"redis: {config.redis.describe()} answers, and the sidecar may "
            "subscribe to its channels and read the history"
        )
    else:
        problems.append(f"redis: {redis_problem}")
    if token is not None:
        try:
            verdict, ok = explain_token(token, config)
        except DatabaseError as exc:
            verdict, ok = (
                f"cannot be checked: the database query failed ({one_line(exc)})."
                " Fix the database problems first.",
                False,
            )
        (out if ok else problems.append)(f"token: {verdict}")
    for warning in warnings:
        out(f"WARNING {warning}")
    for problem in problems:
        out(f"PROBLEM {problem}")
    out("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def write_warnings(config: Config) -> list[str]:
    """A warning if the role could change the tables the sidecar reads."""
    try:
        writable = writable_tables()
    except DatabaseError as exc:
        return [
            "database: cannot tell whether the role may write "
            f"({one_line(exc)}); the README asks for a role that can only read."
        ]
    if not writable:
        return []
    from django.db import connection

    who = (
        mysql_account()
        if connection.vendor == "mysql"
        else config.database.get("USER") or "the role"
    )
    return [
        f"database: {who} may change {', '.join(writable)}, not only read "
        "them. The sidecar's sessions are read-only whatever the role, but it "
        "should log in as a role with SELECT only. Fix: create the README's "
        'read-only role ("A read-only database role") and put it in '
        "DATABASE_URL."
    ]


def check_redis(config: Config) -> str | None:
    """What keeps the sidecar from using Redis as it does, with its fix."""
    from .wire import control_channel, history_key

    target = config.redis
    if target.mode == "cluster":
        return _check_cluster(config)
    url = target.describe()
    client = target.sync_client(socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.exceptions.NoPermissionError as exc:
        return (
            f"{url}: the user may not PING ({one_line(exc)}): is it the main "
            f"site's? Fix: set {config.redis_url_variable} to the sidecar's Redis "
            "user, with the "
            "sidecar's rules of docs/redis.md."
        )
    except redis.AuthenticationError as exc:
        return (
            f"{url} refuses the credentials ({one_line(exc)}). Fix: set "
            f"{config.redis_url_variable} to the sidecar's Redis user (docs/redis.md)."
        )
    except (redis.RedisError, OSError) as exc:
        return (
            f"{url} does not answer ({one_line(exc)}). Fix: start Redis, or set "
            f"{config.redis_url_variable} to the main site's Redis with the "
            "sidecar's user "
            "(docs/redis.md)."
        )
    problem = mode_problem_of(config, client)
    if problem:
        client.close()
        return problem
    channels = [config.channel, control_channel(config.channel)]
    try:
        pubsub = client.pubsub()
        pubsub.subscribe(*channels)
        pubsub.close()
        try:
            client.xinfo_stream(history_key(config.channel))
        except redis.ResponseError as exc:
            if isinstance(exc, redis.exceptions.NoPermissionError):
                raise
            # No such key: nothing was published with history yet.
    except redis.exceptions.NoPermissionError as exc:
        return (
            f"{url}: the sidecar's user may not use {', '.join(channels)} or "
            f"{history_key(config.channel)} ({one_line(exc)}). Fix: grant it the "
            "sidecar's rules of docs/redis.md for WS_CHANNEL="
            f"{config.channel!r}."
        )
    except (redis.RedisError, OSError) as exc:
        return f"{url} failed ({one_line(exc)})."
    finally:
        client.close()
    return None


def mode_problem_of(config: Config, client: redis.Redis) -> str | None:
    """Whether the server is a cluster node when it should not be (HELLO
    says, which every ACL user may send)."""
    from .redistarget import mode_problem, server_mode

    return mode_problem(
        config.redis_cluster,
        server_mode(client.execute_command("HELLO")) == "cluster",
        config.redis_url_variable,
        "WS_REDIS_CLUSTER=true",
    )


def _not_a_cluster(exc: Exception) -> bool:
    """Whether redis-py's cluster client found a Redis without cluster mode."""
    return "cluster mode is not enabled" in str(exc).lower()


def _not_a_cluster_problem(config: Config) -> str:
    from .redistarget import mode_problem

    problem = mode_problem(True, False, config.redis_url_variable, "WS_REDIS_CLUSTER")
    assert problem is not None
    return problem


def _check_cluster(config: Config) -> str | None:
    """A cluster: reachable, every slot served, every partition's stream and
    the control channel usable."""
    from redis.exceptions import RedisClusterException

    from .partitions import PARTITIONS, history_key_of
    from .wire import control_channel

    target = config.redis
    url = target.describe()
    try:
        client = target.sync_client(socket_connect_timeout=3, socket_timeout=3)
    except RedisClusterException as exc:
        if _not_a_cluster(exc):
            return f"{_not_a_cluster_problem(config)}."
        return f"{url} does not answer as a cluster ({one_line(exc)})."
    except (redis.RedisError, OSError) as exc:
        return f"{url} does not answer ({one_line(exc)}). Fix: start the cluster."
    try:
        info = client.cluster_info()
        if info.get("cluster_state") != "ok":
            return f"{url}: the cluster's state is {info.get('cluster_state')!r}."
        covered = int(info.get("cluster_slots_ok", 0))
        if covered != 16384:
            return (
                f"{url}: {16384 - covered} of the 16384 slots are not served. "
                "Fix: assign them (redis-cli --cluster fix)."
            )
        for partition in range(PARTITIONS):
            try:
                client.xinfo_stream(history_key_of(config.channel, partition))
            except redis.ResponseError as exc:
                if isinstance(exc, redis.exceptions.NoPermissionError):
                    raise
        pubsub = client.pubsub()
        pubsub.ssubscribe(control_channel(config.channel))
        pubsub.close()
    except redis.exceptions.NoPermissionError as exc:
        return (
            f"{url}: the sidecar's user may not read the partitions' streams or "
            f"subscribe to the control channel ({one_line(exc)})."
        )
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        return f"{url} failed ({one_line(exc)})."
    finally:
        client.close()
    return None


def startup_redis_problem(config: Config) -> str | None:
    """A Redis of the wrong mode, found at start-up (None when it matches, or
    does not answer: the subscriber waits for it)."""
    from redis.exceptions import RedisClusterException

    target = config.redis
    try:
        client = target.sync_client(socket_connect_timeout=2, socket_timeout=2)
    except RedisClusterException as exc:
        return _not_a_cluster_problem(config) if _not_a_cluster(exc) else None
    except (redis.RedisError, OSError):
        return None
    try:
        if target.mode == "cluster":
            return None
        return mode_problem_of(config, client)
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def sidecar_tables() -> list[str]:
    """Every table the sidecar reads: the README's GRANT list, for this model."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    User = get_user_model()
    return [
        User._meta.db_table,
        *(f.remote_field.through._meta.db_table for f in User._meta.many_to_many),
        Group._meta.db_table,
        Group.permissions.through._meta.db_table,
        Permission._meta.db_table,
        ContentType._meta.db_table,
    ]


def unreadable_tables(config: Config, skip: Sequence[str] = ()) -> list[str]:
    """A problem for each table this role cannot SELECT from, with its fix.

    A missing GRANT would otherwise show only as failed authentications.
    Tables already named in ``skip`` (the schema check's problems) are left out.
    """
    from django.db import connection

    from .schema import permission_denied

    problems = []
    for table in sidecar_tables():
        if any(repr(table) in problem for problem in skip):
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT 1"
                )
        except DatabaseError as exc:
            reason = one_line(exc)
            if permission_denied(exc):
                # MySQL and MariaDB deny a table the account has no privilege
                # on whether it exists or not.
                missing = (
                    " If the table does not exist there, set DATABASE_URL to the "
                    "main site's database (and WS_USER_TABLE to its user table)."
                    if connection.vendor == "mysql"
                    else ""
                )
                problems.append(
                    f"cannot read table {table!r} ({reason}). Fix: "
                    f"{grant_select(config, table)} (see the README's read-only "
                    f"role).{missing}"
                )
            else:
                problems.append(
                    f"cannot read table {table!r} ({reason}). Fix: set DATABASE_URL "
                    "to the main site's database, where its migrations ran"
                )
    return problems


def grant_select(config: Config, table: str) -> str:
    """The statement that lets this role read ``table``, in its database's SQL."""
    from django.db import connection

    if connection.vendor == "mysql":
        return (
            f"GRANT SELECT ON `{config.database.get('NAME')}`.`{table}` TO "
            f"{mysql_account()};"
        )
    role = config.database.get("USER") or "the sidecar's role"
    return f"GRANT SELECT ON {table} TO {role};"


def mysql_account() -> str:
    """The MySQL/MariaDB account this session authenticated as: 'user'@'host'."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        user, _, host = cursor.fetchone()[0].rpartition("@")
    return f"'{user}'@'{host}'"


# Privileges that let a role change data or tables, by database.
PG_WRITE_PRIVILEGES = "INSERT,UPDATE,DELETE,TRUNCATE"
MYSQL_WRITE_PRIVILEGES = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "INDEX",
    "TRIGGER",
)


def writable_tables() -> list[str]:
    """The tables the sidecar reads that this role could also change.

    The sidecar's sessions are read-only whatever the role, but the README asks
    for a role that can only read (in case of a bug, or of a stolen password).
    PostgreSQL and MySQL/MariaDB are asked; SQLite has no roles.
    """
    from django.db import connection

    tables = sidecar_tables()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            return [
                table
                for table in tables
                if _fetch_bool(
                    cursor,
                    "SELECT has_table_privilege(%s, %s)",
                    [connection.ops.quote_name(table), PG_WRITE_PRIVILEGES],
                )
            ]
        if connection.vendor != "mysql":
            return []
        cursor.execute("SELECT CURRENT_USER()")
        user, _, host = cursor.fetchone()[0].rpartition("@")
        grantee = f"'{user}'@'{host}'"
        placeholders = ", ".join(["%s"] * len(MYSQL_WRITE_PRIVILEGES))
        # Global privileges, then the database's (its name may be a pattern),
        # then each table's.
        cursor.execute(
            "SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s "
            f"AND PRIVILEGE_TYPE IN ({placeholders}) "
            "UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES "
            "WHERE GRANTEE = %s AND DATABASE() LIKE TABLE_SCHEMA "
            f"AND PRIVILEGE_TYPE IN ({placeholders}) LIMIT 1",
            [grantee, *MYSQL_WRITE_PRIVILEGES, grantee, *MYSQL_WRITE_PRIVILEGES],
        )
        if cursor.fetchone() is not None:
            return tables
        cursor.execute(
            "SELECT DISTINCT TABLE_NAME FROM information_schema.TABLE_PRIVILEGES "
            "WHERE GRANTEE = %s AND TABLE_SCHEMA = DATABASE() "
            f"AND PRIVILEGE_TYPE IN ({placeholders})",
            [grantee, *MYSQL_WRITE_PRIVILEGES],
        )
        writable = {row[0] for row in cursor.fetchall()}
        return [table for table in tables if table in writable]


def _fetch_bool(cursor, sql: str, parameters: list) -> bool:
    cursor.execute(sql, parameters)
    return bool(cursor.fetchone()[0])


def explain_token(token: str, config: Config) -> tuple[str, bool]:
    """Whether a token verifies here and, if not, the likely reason."""
    from django.contrib.auth import get_user_model
    from sesame import packers
    from sesame import settings as sesame_settings
    from sesame.tokens_v2 import get_revocation_key, sign, unpack_timestamp

    from .auth import Authenticator
    from .tokens import token_pk_types

    token = token.strip()
    authenticator = Authenticator(config.sesame_scope)
    principal = authenticator.authenticate(token)
    if principal is not None:
        if principal.permissions.everything:
            models = "every model (superuser)"
        else:
            models = ", ".join(_model_names(principal.permissions.content_type_ids))
        models = models or "nothing (no view or change permission)"
        return (
            f"valid for user {principal.user_id} ({principal.username}); "
            f"receives events for: {models}",
            True,
        )

    def pk_hint() -> str:
        types = token_pk_types(token)
        configured = config.user_model.pk_type if config.user_model.custom else "int"
        if types and configured not in types:
            return (
                f" Its length fits a {' or '.join(sorted(types))} primary key: "
                f"set WS_USER_PK={sorted(types)[0]}."
            )
        return ""

    try:
        data = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
        user_pk, rest = packers.packer.unpack_pk(data)
        age, signature = unpack_timestamp(rest)
        if len(signature) != sesame_settings.SIGNATURE_SIZE:
            raise ValueError("signature size")
    except Exception:
        return (
            "invalid: it cannot be decoded with this configuration (truncated, "
            "or SESAME_SIGNATURE_SIZE, SESAME_MAX_AGE or the pk type differ from "
            f"the main site's).{pk_hint()}",
            False,
        )
    if age is not None and age >= sesame_settings.MAX_AGE:
        return (
            f"expired: it was made {age} s ago and SESAME_MAX_AGE is "
            f"{sesame_settings.MAX_AGE}. Fix: fetch a fresh token just before "
            "connecting.",
            False,
        )
    User = get_user_model()
    user = User._default_manager.filter(
        **{sesame_settings.PRIMARY_KEY_FIELD: user_pk}
    ).first()
    if user is None:
        return f"invalid: no user with primary key {user_pk!r}.{pk_hint()}", False
    if not user.is_active:
        return f"invalid: user {user.pk} ({user.get_username()}) is inactive.", False
    signed = data[: -sesame_settings.SIGNATURE_SIZE]
    revocation_key = get_revocation_key(user)
    for scope in {config.sesame_scope, ""}:
        for key in sesame_settings.VERIFICATION_KEYS:
            expected = sign(
                signed + revocation_key + scope.encode(),
                key,
                sesame_settings.SIGNATURE_SIZE,
            )
            if expected == signature and scope != config.sesame_scope:
                return (
                    f"invalid: it was made for scope {scope!r}, not "
                    f"WS_SESAME_SCOPE={config.sesame_scope!r}. Fix: make "
                    "WSSERVER_SESAME_SCOPE and WS_SESAME_SCOPE equal.",
                    False,
                )
    return (
        f"invalid: the signature does not match for user {user.pk} "
        f"({user.get_username()}). Likely: another SECRET_KEY or SESAME_KEY than "
        "the main site's, the user's password changed since, or another scope. "
        "Fix: compare with `manage.py wsserver_env` on the main site.",
        False,
    )


def _model_names(content_type_ids) -> list[str]:
    from django.contrib.contenttypes.models import ContentType

    return sorted(
        f"{ct.app_label}.{ct.model}"
        for ct in ContentType.objects.filter(pk__in=content_type_ids)
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line: each problem is one line."""
    return " ".join(str(exc).split())
