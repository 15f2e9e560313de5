"""Configuration: every setting, read from the environment and validated once.

The sidecar is configured only by environment variables. :data:`SETTINGS` is the
single list of them: ``python -m wsserver --help`` and the README's table are
made from it. :func:`load_config` turns an environment into a :class:`Config`,
reporting every problem at once, each naming the variable and what was wrong.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from .logs import mask_url
from .pktypes import PK_TYPES, describe_pk_types
from .redistarget import RedisTarget, parse_redis

__all__ = [
    "SETTINGS",
    "Config",
    "ConfigError",
    "Setting",
    "UserModel",
    "get_config",
    "load_config",
]


class ConfigError(Exception):
    """The environment does not describe a usable configuration."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its default, what it means and how to parse it."""

    name: str
    default: str | None  # None: required
    help: str
    parse: Callable[[str], Any]
    secret: bool = False
    group: str = "Sidecar"
    # Where the value goes in Config: a field, or "part.key" for a value that
    # is part of one (the user model, the django-sesame settings). Empty: the
    # variable's name in lower case, without "WS_".
    field: str = ""

    @property
    def target(self) -> str:
        return self.field or self.name.removeprefix("WS_").lower()


# Parsers. Each takes the raw string and raises ValueError with a message that
# completes "NAME: ...".


def _text(value: str) -> str:
    return value


def _required_text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum else f">= {minimum}"
            raise ValueError(f"expected an integer {bounds}, got {number}")
        return number

    return parse


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


def _optional_seconds(value: str) -> float | None:
    if value.strip().lower() in {"", "none", "off", "0"}:
        return None
    return _seconds(value)


def _max_age(value: str) -> int | None:
    if value.strip().lower() in {"", "none"}:
        return None
    return _integer(1)(value)


def _workers(value: str) -> int:
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    return _integer(1, 1024)(value)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


@dataclasses.dataclass(frozen=True)
class Share:
    """A part of another setting's value, e.g. "25%" of WS_MAX_CONNECTIONS."""

    fraction: float

    def of(self, total: int) -> int:
        return max(1, int(total * self.fraction))


def _number_or_share(value: str) -> int | Share:
    text = value.strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(
                f"expected a number or a percentage, got {value!r}"
            ) from None
        if not 0 < percent <= 100:
            raise ValueError(f"expected a percentage from 0 to 100, got {value!r}")
        return Share(percent / 100)
    return _integer(1)(text)


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _list(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"expected IP addresses or networks like 10.0.0.0/8, got {item!r}"
            ) from None
    return tuple(networks)


def _database_url(value: str) -> dict[str, Any]:
    import dj_database_url

    try:
        database = dj_database_url.parse(value)
    except Exception as exc:  # dj-database-url raises several types
        raise ValueError(f"cannot parse {mask_url(value)!r}: {exc}") from None
    if not database.get("ENGINE"):
        raise ValueError(f"unsupported database URL {mask_url(value)!r}")
    return database


def _redis_url(value: str) -> str:
    # Checked whole with WS_REDIS_CLUSTER and WS_REDIS_CA_FILE (_cross_check).
    from .redistarget import SCHEMES

    scheme = urllib.parse.urlsplit(value.split(",", 1)[0].strip()).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            "expected a redis://, rediss://, unix:// or redis+sentinel:// URL, "
            f"got {mask_url(value)!r}"
        )
    return value


def _file(value: str) -> str:
    if value and not os.path.isfile(value):
        raise ValueError(f"no such file: {value!r}")
    return value


def _identifier(value: str) -> str:
    if not value.replace("_", "").isalnum():
        raise ValueError(f"expected a SQL table or column name, got {value!r}")
    return value


def _class_name(value: str) -> str:
    if not value.isidentifier():
        raise ValueError(f"expected a Python class name, got {value!r}")
    return value


def _one_time(value: str) -> bool:
    if _bool(value):
        raise ValueError(
            "single-use tokens are not supported: django-sesame would write "
            "last_login to the shared database on every connection, and the "
            "sidecar never writes to it. Use short-lived tokens "
            "(SESAME_MAX_AGE) instead, here and on the main site"
        )
    return False


SETTINGS: tuple[Setting, ...] = (
    # Shared with the main site.
    Setting(
        "DATABASE_URL",
        "sqlite:///db.sqlite3",
        "The main site's database, in dj-database-url syntax. Opened read-only "
        "(PostgreSQL/PostGIS, SQLite/SpatiaLite, MySQL/MariaDB with "
        "mysqlclient; any other database is refused); add ?pool=true for "
        "psycopg's connection pool on PostgreSQL.",
        _database_url,
        secret=True,
        group="Shared with the main site",
        field="database",
    ),
    Setting(
        "SECRET_KEY",
        None,
        "The main site's SECRET_KEY: tokens are signed with it.",
        _required_text,
        secret=True,
        group="Shared with the main site",
    ),
    Setting(
        "SECRET_KEY_FALLBACKS",
        "",
        "The main site's SECRET_KEY_FALLBACKS, comma-separated: tokens signed "
        "with an older key keep working during a key rotation.",
        _list,
        secret=True,
        group="Shared with the main site",
    ),
    Setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/1",
        "The Redis server and database the main site publishes events to "
        "(the main site's WSSERVER_REDIS_URL). Ignored when WS_REDIS_URL is set.",
        _redis_url,
        secret=True,
        group="Shared with the main site",
    ),
    Setting(
        "WS_REDIS_URL",
        "",
        "The same as REDIS_URL, and it wins over it: set this one when the "
        "sidecar shares an environment file with the main site, whose own "
        "REDIS_URL often names its cache (as in cookiecutter-django). Empty: "
        "REDIS_URL is used.",
        lambda value: _redis_url(value) if value else "",
        secret=True,
        group="Shared with the main site",
        field="ws_redis_url",
    ),
    Setting(
        "WS_REDIS_CLUSTER",
        "false",
        "true: the Redis URL names a node of a Redis Cluster (more startup "
        "nodes may follow, comma-separated), and events come on sharded "
        "channels, one per partition (the main site's WSSERVER_REDIS_CLUSTER; "
        "see docs/redis.md). Checked against the server at start-up.",
        _bool,
        group="Shared with the main site",
        field="redis_cluster",
    ),
    Setting(
        "WS_REDIS_CA_FILE",
        "",
        "With rediss:// (TLS): the PEM file of the certificate authorities to "
        "trust (the main site's WSSERVER_REDIS_CA_FILE). Empty: the system's.",
        _file,
        group="Shared with the main site",
        field="redis_ca_file",
    ),
    Setting(
        "WS_CHANNEL",
        "events",
        "The Redis pub/sub channel (the main site's WSSERVER_CHANNEL).",
        _required_text,
        group="Shared with the main site",
    ),
    Setting(
        "WS_SESAME_SCOPE",
        "wsserver",
        "The django-sesame scope tokens are made for (the main site's "
        "WSSERVER_SESAME_SCOPE). A token of another scope is refused.",
        _text,
        group="Shared with the main site",
    ),
    Setting(
        "WS_HISTORY_SIZE",
        "10000",
        "Events a resuming client may be sent: the length of the history the "
        "main site keeps (its WSSERVER_HISTORY_SIZE). A client that missed "
        "more is told to reload instead.",
        _integer(0),
        group="Shared with the main site",
    ),
    # django-sesame: each must equal the main site's setting of the same name.
    Setting(
        "SESAME_MAX_AGE",
        "30",
        "Token lifetime in seconds, or 'none'. Whether it is a number or none "
        "must match the main site; the number itself is the sidecar's to choose.",
        _max_age,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_MAX_AGE",
    ),
    Setting(
        "SESAME_KEY",
        "",
        "The main site's SESAME_KEY.",
        _text,
        secret=True,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_KEY",
    ),
    Setting(
        "SESAME_SIGNATURE_SIZE",
        "10",
        "The main site's SESAME_SIGNATURE_SIZE, in bytes.",
        _integer(1, 64),
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_SIGNATURE_SIZE",
    ),
    Setting(
        "SESAME_PACKER",
        "",
        "The main site's SESAME_PACKER (a dotted path), if it sets one.",
        lambda value: value or None,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_PACKER",
    ),
    Setting(
        "SESAME_PRIMARY_KEY_FIELD",
        "pk",
        "The main site's SESAME_PRIMARY_KEY_FIELD.",
        _required_text,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_PRIMARY_KEY_FIELD",
    ),
    Setting(
        "SESAME_INVALIDATE_ON_PASSWORD_CHANGE",
        "true",
        "The main site's SESAME_INVALIDATE_ON_PASSWORD_CHANGE.",
        _bool,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_INVALIDATE_ON_PASSWORD_CHANGE",
    ),
    Setting(
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE",
        "false",
        "The main site's SESAME_INVALIDATE_ON_EMAIL_CHANGE.",
        _bool,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_INVALIDATE_ON_EMAIL_CHANGE",
    ),
    Setting(
        "SESAME_ONE_TIME",
        "false",
        "Must stay false: single-use tokens would make the sidecar write "
        "last_login to the shared database.",
        _one_time,
        group="django-sesame (must match the main site)",
        field="sesame.SESAME_ONE_TIME",
    ),
    # The main site's user model.
    Setting(
        "WS_USER_TABLE",
        "",
        "The table of the main site's custom user model (e.g. accounts_user). "
        "Empty: the main site uses django.contrib.auth's User.",
        lambda value: _identifier(value) if value else "",
        group="Custom user model",
        field="user_model.table",
    ),
    Setting(
        "WS_USER_PK",
        "int",
        f"Type of the custom user model's primary key: {describe_pk_types()}. "
        "Tokens pack it: a wrong value rejects every token.",
        _choice(*PK_TYPES),
        group="Custom user model",
        field="user_model.pk_type",
    ),
    Setting(
        "WS_USERNAME_FIELD",
        "username",
        "The custom user model's USERNAME_FIELD (e.g. email).",
        _identifier,
        group="Custom user model",
        field="user_model.username_field",
    ),
    Setting(
        "WS_USER_EMAIL_FIELD",
        "email",
        "The custom user model's EMAIL_FIELD; read only when "
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE is true.",
        _identifier,
        group="Custom user model",
        field="user_model.email_field",
    ),
    Setting(
        "WS_USER_MODEL_NAME",
        "User",
        "The class name of the custom user model: Django names the user column "
        "of its groups and user_permissions tables after it (<name>_id).",
        _class_name,
        group="Custom user model",
        field="user_model.class_name",
    ),
    # The sidecar itself.
    Setting("WS_HOST", "localhost", "Interface to listen on.", _required_text),
    Setting("WS_PORT", "8888", "TCP port to listen on.", _integer(1, 65535)),
    Setting(
        "WS_COMPRESSION",
        "none",
        "permessage-deflate for server-to-client frames: none or deflate. "
        "Compression costs memory and CPU per connection for small JSON events.",
        lambda value: (
            None if _choice("none", "deflate")(value) == "none" else "deflate"
        ),
    ),
    Setting(
        "WS_AUTH_TIMEOUT",
        "10",
        "Seconds a new connection has to send its token.",
        _seconds,
    ),
    Setting(
        "WS_MAX_MESSAGE_SIZE",
        "1024",
        "Largest frame a client may send, in bytes (the token, or a resume "
        "request); larger frames close the connection with 1009. With "
        "WS_REDIS_CLUSTER, at least 13824: a resume's cursor may name 256 "
        "partitions.",
        _integer(64, 1 << 20),
    ),
    Setting(
        "WS_ALLOWED_ORIGINS",
        "",
        "Comma-separated Origin values allowed to connect, e.g. "
        "https://example.com. Empty: any origin (a warning is logged). "
        "Clients that send no Origin (not browsers) are always allowed.",
        _list,
    ),
    Setting(
        "WS_MAX_CONNECTIONS",
        "20000",
        "Open connections per process; further handshakes get HTTP 503.",
        _integer(1),
    ),
    Setting(
        "WS_MAX_CONNECTIONS_PER_USER",
        "50",
        "Open connections per user per process; further ones are closed with "
        "1008 'too many connections'.",
        _integer(1),
    ),
    Setting(
        "WS_MAX_BUFFER",
        "1048576",
        "Bytes of pending output after which a client that stopped reading is "
        "closed with 1013 'client too slow'.",
        _integer(1024),
    ),
    Setting(
        "WS_MAX_EVENT_SIZE",
        "65536",
        "Largest event, in bytes as clients receive it, forwarded to them; "
        "larger bus messages are skipped with a log line. Keep it equal to the "
        "main site's WSSERVER_MAX_EVENT_SIZE. WS_MAX_BUFFER, if smaller, is the "
        "limit instead.",
        _integer(64),
    ),
    Setting(
        "WS_PING_INTERVAL",
        "20",
        "Seconds between keepalive pings; 'none' disables keepalive.",
        _optional_seconds,
    ),
    Setting(
        "WS_PING_TIMEOUT",
        "20",
        "Seconds to wait for a pong before closing the connection.",
        _optional_seconds,
    ),
    Setting(
        "WS_SHUTDOWN_TIMEOUT",
        "10",
        "On SIGTERM or SIGINT, seconds to close connections before aborting them.",
        _seconds,
    ),
    Setting(
        "WS_DB_THREADS",
        "4",
        "Worker threads (and so database connections) for authentication.",
        _integer(1, 64),
    ),
    Setting(
        "WS_DB_CONN_MAX_AGE",
        "600",
        "Seconds a database connection is reused before it is reopened "
        "(Django's CONN_MAX_AGE; forced to 0 with ?pool=true).",
        _integer(0),
    ),
    Setting(
        "WS_LOG_LEVEL",
        "INFO",
        "DEBUG, INFO, WARNING or ERROR.",
        lambda value: _choice("debug", "info", "warning", "error")(value).upper(),
    ),
    Setting(
        "WS_WORKERS",
        "1",
        "Server processes sharing WS_PORT (SO_REUSEPORT), each with its own "
        "Redis subscription: a number, or auto for one per CPU core.",
        _workers,
    ),
    Setting(
        "WS_LOG_FORMAT",
        "text",
        "text (one readable line per record) or json (one JSON object per "
        "line, for log collectors).",
        _choice("text", "json"),
    ),
    Setting(
        "WS_METRICS_PORT",
        "0",
        "Port for GET /metrics (Prometheus), served on WS_METRICS_HOST, never "
        "on WS_PORT; 0: no metrics. With WS_WORKERS, worker n (from 0) serves "
        "its own on WS_METRICS_PORT + n.",
        _integer(0, 65535),
    ),
    Setting(
        "WS_METRICS_HOST",
        "127.0.0.1",
        "Interface for WS_METRICS_PORT: loopback by default, so that metrics are "
        "not public; e.g. 0.0.0.0 for a Prometheus on another host, behind a "
        "firewall.",
        _required_text,
    ),
    # Limits against abuse.
    Setting(
        "WS_MAX_AUTHENTICATING",
        "25%",
        "Connections still authenticating (handshake done, no token decided "
        "yet) per process, as a number or a percentage of WS_MAX_CONNECTIONS; "
        "further handshakes get HTTP 503, so that unauthenticated sockets can "
        "never take every slot.",
        _number_or_share,
        group="Limits",
    ),
    Setting(
        "WS_MAX_AUTHENTICATING_PER_ADDRESS",
        "50",
        "Connections still authenticating per client address (an IPv4 address, "
        "or an IPv6 /64) per process; further handshakes get HTTP 503. 0: no "
        "limit. Behind a proxy, set WS_TRUSTED_PROXIES, or 0 and limit at the "
        "proxy.",
        _integer(0),
        group="Limits",
    ),
    Setting(
        "WS_TRUSTED_PROXIES",
        "",
        "Comma-separated addresses or networks (e.g. 127.0.0.1, 10.0.0.0/8) of "
        "proxies whose X-Forwarded-For header names the client. Empty: the "
        "header is ignored and the peer's address is the client's.",
        _networks,
        group="Limits",
    ),
    Setting(
        "WS_MAX_REPLAYS",
        "20",
        "Resumes replaying history at once per process; others wait their turn "
        "(within WS_REPLAY_TIMEOUT).",
        _integer(1),
        group="Limits",
    ),
    Setting(
        "WS_MAX_REPLAYS_PER_USER",
        "2",
        "Resumes replaying history at once per user per process; others wait "
        "their turn (within WS_REPLAY_TIMEOUT).",
        _integer(1),
        group="Limits",
    ),
    Setting(
        "WS_REPLAY_TIMEOUT",
        "30",
        "Seconds a resume may take, waiting for its turn and sending the missed "
        "events; a client that has not taken them by then is closed with 1013.",
        _seconds,
        group="Limits",
    ),
    Setting(
        "WS_RECHECK_INTERVAL",
        "300",
        "Seconds between rechecks of every connected user's access, batched, "
        "which catch changes that sent no message (QuerySet.update(), raw SQL, "
        "a missed message); 'none' disables them.",
        _optional_seconds,
        group="Limits",
    ),
    Setting(
        "WS_MAX_CONNECTION_AGE",
        "none",
        "Seconds after which a connection is closed (1000 'connection expired') "
        "so that its client authenticates again; 'none': no limit.",
        _optional_seconds,
        group="Limits",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclasses.dataclass(frozen=True)
class UserModel:
    """Where the main site keeps its users, when it is not ``auth.User``."""

    table: str
    pk_type: str
    username_field: str
    email_field: str
    class_name: str

    @property
    def custom(self) -> bool:
        return bool(self.table)


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated configuration: one field per setting (see Setting.target)."""

    # Secrets stay out of repr() so that a logged Config leaks nothing.
    database: dict[str, Any] = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    secret_key_fallbacks: tuple[str, ...] = dataclasses.field(repr=False)
    # The Redis URL in use: WS_REDIS_URL's if set, else REDIS_URL's.
    redis_url: str = dataclasses.field(repr=False)
    ws_redis_url: str = dataclasses.field(repr=False)
    redis_cluster: bool
    redis_ca_file: str
    channel: str
    sesame_scope: str
    history_size: int
    # The SESAME_* settings, passed to Django's settings as they are.
    sesame: dict[str, Any] = dataclasses.field(repr=False)
    user_model: UserModel
    host: str
    port: int
    compression: str | None
    auth_timeout: float
    max_message_size: int
    allowed_origins: tuple[str, ...]
    max_connections: int
    max_connections_per_user: int
    max_buffer: int
    max_event_size: int
    ping_interval: float | None
    ping_timeout: float | None
    shutdown_timeout: float
    db_threads: int
    db_conn_max_age: int
    log_level: str
    workers: int
    log_format: str
    metrics_port: int
    metrics_host: str
    max_authenticating: int
    max_authenticating_per_address: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    max_replays: int
    max_replays_per_user: int
    replay_timeout: float
    recheck_interval: float | None
    max_connection_age: float | None
    environ: Mapping[str, str] = dataclasses.field(repr=False, compare=False)

    @property
    def redis(self) -> RedisTarget:
        """The Redis in use (one server, Sentinel or a Cluster), parsed."""
        return parse_redis(
            self.redis_url,
            cluster=self.redis_cluster,
            ca_file=self.redis_ca_file or None,
        )

    @property
    def redis_url_variable(self) -> str:
        """The variable redis_url comes from, for messages: WS_REDIS_URL or
        REDIS_URL."""
        return "WS_REDIS_URL" if self.ws_redis_url else "REDIS_URL"

    def summary(self) -> dict[str, str]:
        """Every setting as configured, with secrets masked, for the start-up log."""
        shown = {
            setting.name: _mask(setting, self.environ[setting.name])
            for setting in SETTINGS
        }
        if self.ws_redis_url:
            shown["REDIS_URL"] += " (not used: WS_REDIS_URL is set)"
        return shown


# Config fields made of several settings ("part.key" targets).
PARTS: dict[str, Callable[..., Any]] = {"user_model": UserModel, "sesame": dict}


def _mask(setting: Setting, value: str) -> str:
    if not setting.secret or not value:
        return value
    if "://" in value:
        return mask_url(value)
    return "********"


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every setting; raise ConfigError listing all problems."""
    if environ is None:
        environ = os.environ
    problems: list[str] = []
    values: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for setting in SETTINGS:
        text = environ.get(setting.name)
        if text is None:
            if setting.default is None:
                problems.append(f"{setting.name}: required but not set. {setting.help}")
                continue
            text = setting.default
        raw[setting.name] = text
        if setting.name == "REDIS_URL" and environ.get("WS_REDIS_URL"):
            # Overridden: perhaps the main site's own (its cache), not ours.
            values[setting.name] = text
            continue
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as exc:
            problems.append(f"{setting.name}: {exc}")

    if not problems:
        problems.extend(_cross_check(values))
    if problems:
        raise ConfigError(problems)

    share = values["WS_MAX_AUTHENTICATING"]
    if isinstance(share, Share):
        values["WS_MAX_AUTHENTICATING"] = share.of(values["WS_MAX_CONNECTIONS"])
    fields: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
    for setting in SETTINGS:
        part, _, key = setting.target.rpartition(".")
        (parts[part] if part else fields)[key] = values[setting.name]
    for part, make in PARTS.items():
        fields[part] = make(**parts[part])
    fields["redis_url"] = fields["ws_redis_url"] or fields["redis_url"]
    return Config(**fields, environ=raw)


def _cross_check(values: dict[str, Any]) -> list[str]:
    """Problems that involve more than one variable."""
    problems = []
    variable = "WS_REDIS_URL" if values["WS_REDIS_URL"] else "REDIS_URL"
    try:
        parse_redis(
            values[variable],
            cluster=values["WS_REDIS_CLUSTER"],
            ca_file=values["WS_REDIS_CA_FILE"] or None,
        )
    except ValueError as exc:
        problems.append(f"{variable}: {exc}")
    if (
        values["SESAME_MAX_AGE"] is None
        and not values["SESAME_INVALIDATE_ON_PASSWORD_CHANGE"]
    ):
        problems.append(
            "SESAME_MAX_AGE: tokens that never expire and survive a password "
            "change are insecure (django-sesame refuses them): set a number of "
            "seconds or SESAME_INVALIDATE_ON_PASSWORD_CHANGE=true"
        )
    metrics_ports = range(
        values["WS_METRICS_PORT"], values["WS_METRICS_PORT"] + values["WS_WORKERS"]
    )
    if values["WS_METRICS_PORT"] and values["WS_PORT"] in metrics_ports:
        problems.append(
            f"WS_METRICS_PORT: the metrics need ports {metrics_ports.start}-"
            f"{metrics_ports.stop - 1} (one per worker), which include WS_PORT="
            f"{values['WS_PORT']}: choose another port"
        )
    elif values["WS_METRICS_PORT"] and metrics_ports.stop - 1 > 65535:
        problems.append(
            f"WS_METRICS_PORT: {values['WS_WORKERS']} workers need ports up to "
            f"{metrics_ports.stop - 1}, past 65535: choose a lower port"
        )
    from .djangosettings import read_only_problem

    problem = read_only_problem(values["DATABASE_URL"])
    if problem:
        problems.append(problem)
    engine = values["DATABASE_URL"]["ENGINE"]
    if engine == "django.db.backends.sqlite3" and values["DATABASE_URL"]["NAME"] in {
        "",
        ":memory:",
    }:
        problems.append(
            "DATABASE_URL: an in-memory SQLite database cannot be shared with "
            "the main site; give the path of its database file"
        )
    return problems


_current: Config | None = None


def get_config() -> Config:
    """The process's configuration, loaded from os.environ on first use."""
    global _current
    if _current is None:
        _current = load_config()
    return _current


def setting(name: str) -> Setting:
    """Look up a setting by its variable name."""
    return _BY_NAME[name]
