"""Send events and control messages to Redis once their transaction commits.

Each event is appended to a bounded Redis Stream and published on the
channel by one Lua script, atomically: the stream entry's id becomes the
event's ``"id"``, and the order of the stream is the order of publication,
which is what lets the sidecar replay history with no gap and no duplicate.

Two kinds of events go through :func:`send`, as :class:`Outgoing` messages:

- admin-shaped events (a ``LogEntry``, a model change with the default
  audience): flat, routed by their ``content_type_id``;
- addressed events (``publish()``'s, model changes with a callable audience):
  published as ``@<audience>\\n<event>``, see :mod:`wsserver.audience`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from redis.exceptions import RedisClusterException

from ..audience import (
    MAX_AUDIENCE_SIZE,
    PERMISSION_FORMAT,
    encode_audience,
    parse_audience,
)
from ..logs import mask_url
from ..partitions import (
    PARTITIONS,
    channel_of,
    copies,
    history_key_of,
    partition_of,
)
from ..redistarget import RedisTarget, mode_problem, parse_redis, server_mode
from ..wire import PUBLISH_WITH_HISTORY, addressed, control_channel, history_key
from . import conf
from .events import event_for, serialize

logger = logging.getLogger("wsserver.publisher")

# What the sidecar accepts in an audience (see wsserver.audience).
MAX_ID = 2**63 - 1
MAX_USER_ID_LENGTH = 255

_client: Any = None
_script = None
_client_lock = threading.Lock()
_down_until = 0.0


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One event to send.

    ``event`` is what clients receive, without ``"id"`` (the script inserts it
    first). ``content_type_id`` is set for admin-shaped events (kept in the
    stream entry as ``ct``). ``audience`` is :func:`encode_audience`'s JSON;
    None: the event is routed by its ``content_type_id`` (admin shape).
    """

    event: dict
    content_type_id: int | None = None
    audience: str | None = None


def target() -> RedisTarget:
    """The Redis to publish to, as the settings name it (raises
    ImproperlyConfigured saying what is wrong)."""
    try:
        return parse_redis(
            conf.redis_url(),
            cluster=conf.redis_cluster(),
            ca_file=conf.redis_ca_file(),
            cluster_setting="WSSERVER_REDIS_CLUSTER = True",
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"WSSERVER_REDIS_URL: {exc}") from None


def client() -> Any:
    """One Redis client per process; redis-py's pool is thread-safe. A
    RedisCluster when WSSERVER_REDIS_CLUSTER is set, the master's client for
    Sentinel. The first connection checks the mode against the server."""
    global _client, _script
    with _client_lock:
        if _client is None:
            timeout = conf.publish_timeout()
            redis_target = target()
            try:
                new = redis_target.sync_client(
                    socket_timeout=timeout, socket_connect_timeout=timeout
                )
            except RedisClusterException as exc:  # a cluster client connects now
                if "not enabled" in str(exc):
                    raise redis.RedisError(
                        mode_problem(
                            True, False, "WSSERVER_REDIS_URL", "WSSERVER_REDIS_CLUSTER"
                        )
                    ) from None
                raise
            if redis_target.mode != "cluster":
                # A cluster client refuses a plain Redis itself.
                problem = mode_problem(
                    False,
                    server_mode(new.execute_command("HELLO")) == "cluster",
                    "WSSERVER_REDIS_URL",
                    "WSSERVER_REDIS_CLUSTER = True",
                )
                if problem:
                    new.close()
                    raise redis.RedisError(problem)
            _client = new
            _script = _client.register_script(PUBLISH_WITH_HISTORY)
        return _client


def _cluster() -> bool:
    return conf.redis_cluster()


def reset_client() -> None:
    """Forget the client, e.g. after the settings changed (tests)."""
    global _client, _script, _down_until
    with _client_lock:
        _client = _script = None
        _down_until = 0.0


def publish_on_commit(entries: Iterable[Any], using: str | None = None) -> None:
    """Publish these LogEntry rows when (and only if) the current transaction
    commits.

    The payloads are built now, while the entries' related rows are readable,
    and sent after the commit; outside a transaction they are sent at once.
    """
    messages = [
        Outgoing(event, content_type_id=event["content_type_id"])
        for entry in entries
        if (event := event_for(entry))
    ]
    if messages:
        send_on_commit(messages, using=using)


def send_on_commit(messages: list[Outgoing], using: str | None = None) -> None:
    """Send these messages when (and only if) the transaction of the database
    ``using`` (default: the default database) commits; at once outside one."""
    messages = list(messages)
    if messages:
        transaction.on_commit(lambda: send(messages), using=using)


def send(messages: list[Outgoing]) -> bool:
    """Send events to the channel now; a Redis failure is logged, never raised.

    The change is already committed: failing the request would not undo it,
    so the event is lost and the log says so (and False is returned). An event
    larger than WSSERVER_MAX_EVENT_SIZE is logged and skipped (publish()
    refuses those at the call; admin events can only be skipped).
    """
    channel = conf.channel()
    history_size = conf.history_size()
    max_size = conf.max_event_size()
    payloads = []
    for message in messages:
        payload = serialize(message.event)
        size = len(payload.encode())
        if size > max_size:
            logger.error(
                "event of %d bytes not published, more than "
                "WSSERVER_MAX_EVENT_SIZE (%d): %s",
                size,
                max_size,
                payload[:200],
            )
            continue
        payloads.append((message, payload))
    if not payloads:
        return not messages
    global _down_until
    if time.monotonic() < _down_until:
        _log_failure(
            f"{len(payloads)} event(s)",
            channel,
            "not tried: it failed less than WSSERVER_PUBLISH_TIMEOUT ago",
        )
        return False
    try:
        redis_client = client()
        if _cluster():
            _send_sharded(redis_client, channel, history_size, payloads)
        else:
            with redis_client.pipeline(transaction=False) as pipeline:
                for message, payload in payloads:
                    if history_size > 0:
                        _script(
                            keys=[history_key(channel)],
                            args=[
                                payload,
                                history_size,
                                channel,
                                _content_type(message),
                                message.audience or "",
                            ],
                            client=pipeline,
                        )
                    elif message.audience:
                        pipeline.publish(channel, addressed(message.audience, payload))
                    else:
                        pipeline.publish(channel, payload)
                pipeline.execute()
    except (redis.RedisError, RedisClusterException, ImproperlyConfigured) as exc:
        _down_until = time.monotonic() + conf.publish_timeout()
        _log_failure(f"{len(payloads)} event(s)", channel, exc)
        return False
    return len(payloads) == len(messages)


def _content_type(message: Outgoing) -> int | str:
    return "" if message.content_type_id is None else message.content_type_id


def _send_sharded(
    redis_client: Any,
    channel: str,
    history_size: int,
    payloads: list[tuple[Outgoing, str]],
) -> None:
    """On a Redis Cluster: each event on each partition of its audience (see
    wsserver.partitions), with its history, by one script per partition."""
    failures: list[Exception] = []
    sent = 0
    for message, payload in payloads:
        for partition, audience in _copies(message):
            sharded = channel_of(channel, partition)
            try:
                if history_size > 0:
                    _script(
                        keys=[history_key_of(channel, partition)],
                        args=[
                            payload,
                            history_size,
                            sharded,
                            _content_type(message),
                            audience,
                            f"{partition}:",
                            "sharded",
                        ],
                        client=redis_client,
                    )
                elif audience:
                    redis_client.spublish(sharded, addressed(audience, payload))
                else:
                    redis_client.spublish(sharded, payload)
            except (redis.RedisError, RedisClusterException) as exc:
                # The other partitions' copies still go: their users get it.
                failures.append(exc)
            else:
                sent += 1
    if failures:
        raise redis.RedisError(
            f"{len(failures)} of {len(failures) + sent} partition copies not "
            f"published (their users missed the event): {failures[0]}"
        )


def _copies(message: Outgoing) -> list[tuple[int, str]]:
    """The partitions of an event, each with the audience JSON its copy
    carries ("": an admin event, routed by its content type)."""
    if message.audience is None:
        assert message.content_type_id is not None
        return [(partition_of(content_type=message.content_type_id), "")]
    audience = parse_audience(message.audience)
    return [
        (partition, message.audience if part == audience else part.to_json())
        for partition, part in copies(audience)
    ]


def publish_control_on_commit(message: dict, using: str | None = None) -> None:
    """Tell every sidecar, after the commit, whose access may have changed."""
    payload = json.dumps(message)
    transaction.on_commit(lambda: publish_control(payload), using=using)


def publish_control(payload: str) -> bool:
    """Send a control message now; a Redis failure is logged and returns False.

    On a Redis Cluster it goes to the control channel and to every partition
    whose events it may concern (every shared one, and the users' own), each
    copy ``!<id>\n<message>``: a sidecar receives it on each node before the
    events published after it there, and applies it once, before them.
    """
    channel = control_channel(conf.channel())
    try:
        if _cluster():
            message = f"!{uuid.uuid4().hex}\n{payload}"
            with client().pipeline() as pipeline:
                for target in _control_channels(conf.channel(), payload):
                    pipeline.spublish(target, message)
                pipeline.execute()
        else:
            client().publish(channel, payload)
    except (redis.RedisError, RedisClusterException, ImproperlyConfigured) as exc:
        _log_failure("an access change", channel, exc)
        return False
    return True


def _control_channels(channel: str, payload: str) -> list[str]:
    """Where a control message goes on a Redis Cluster."""
    channels = [control_channel(channel)]
    channels += [channel_of(channel, partition) for partition in range(PARTITIONS)]
    user_ids = json.loads(payload).get("user_ids") or []
    channels += sorted(
        {channel_of(channel, partition_of(user=str(user))) for user in user_ids}
    )
    return channels


def _log_failure(what: str, channel: str, exc: Exception) -> None:
    logger.error(
        "could not publish %s to Redis at %s, channel %r: %s",
        what,
        mask_url(conf.redis_url()),
        channel,
        exc,
    )


# Audiences


def resolve_audience(
    *,
    users: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    permissions: Iterable[str] = (),
    models: Iterable[Any] = (),
) -> str:
    """The audience JSON (:func:`wsserver.audience.encode_audience`) of these
    recipients, checked: a ValueError or TypeError names the argument at fault.

    - ``users``: user instances (saved; not AnonymousUser) or primary keys;
    - ``groups``: ``Group`` instances, names (one query for all of them; an
      unknown name is an error) or integer pks;
    - ``permissions``: ``"app_label.codename"`` strings;
    - ``models``: model classes, instances or ``"app_label.model"`` strings,
      as their content types (a proxy model's own, as the admin logs it).

    At least one recipient is required.
    """
    audience = encode_audience(
        users=_user_ids(_items(users, "users")),
        groups=_group_ids(_items(groups, "groups")),
        permissions=_permissions(_items(permissions, "permissions")),
        content_types=_content_type_ids(_items(models, "models")),
    )
    if audience == "{}":
        raise ValueError(
            "no audience: give at least one of users, groups, permissions or models"
        )
    if len(audience) > MAX_AUDIENCE_SIZE:
        raise ValueError(
            f"audience of {len(audience)} bytes (users, groups, permissions and "
            f"models together), more than {MAX_AUDIENCE_SIZE}"
        )
    return audience


def _items(values: Any, name: str) -> list:
    """The values of an argument that must be a collection (not one string)."""
    if isinstance(values, str | bytes):
        raise TypeError(
            f"{name} must be a list or another iterable, not a string: "
            f"{name}=[{values!r}]?"
        )
    try:
        return list(values)
    except TypeError:
        raise TypeError(
            f"{name} must be a list or another iterable, not "
            f"{type(values).__name__}: {name}=[...]?"
        ) from None


def _user_ids(values: list) -> list[str]:
    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError
    from django.db import models

    User = get_user_model()
    ids = []
    for value in values:
        if getattr(value, "is_anonymous", False) is True:
            raise ValueError("users holds an anonymous user, who cannot be sent to")
        if isinstance(value, models.Model):
            if not isinstance(value, User):
                raise TypeError(
                    f"users holds {value!r}, a {type(value).__name__}, not a "
                    f"{User.__name__} or a primary key"
                )
            if value.pk is None:
                raise ValueError(f"users holds {value!r}, a user never saved (no pk)")
            pk = value.pk
        elif isinstance(value, bool) or not isinstance(value, int | str | uuid.UUID):
            raise TypeError(f"users holds {value!r}, not a user or a primary key")
        else:
            # As the sidecar writes it: str() of the value the ORM reads
            # ("7" for 7, a UUID's canonical form).
            try:
                pk = User._meta.pk.to_python(value)
            except (ValidationError, TypeError, ValueError):
                pk = None
        user_id = "" if pk is None else str(pk)
        if not 0 < len(user_id) <= MAX_USER_ID_LENGTH or "\x00" in user_id:
            raise ValueError(
                f"users holds {value!r}, not a primary key of {User.__name__}"
            )
        ids.append(user_id)
    return ids


def _group_ids(values: list) -> list[int]:
    from django.contrib.auth.models import Group

    ids = []
    names = []
    for value in values:
        if isinstance(value, Group):
            if value.pk is None:
                raise ValueError(f"groups holds {value!r}, a group never saved")
            ids.append(value.pk)
        elif isinstance(value, str):
            names.append(value)
        elif type(value) is int and 0 <= value <= MAX_ID:
            ids.append(value)
        else:
            raise TypeError(
                f"groups holds {value!r}: expected a Group, a group name or a pk"
            )
    if names:
        found = dict(
            Group.objects.filter(name__in=set(names)).values_list("name", "pk")
        )
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise ValueError(
                f"groups holds unknown group name(s): {', '.join(map(repr, unknown))}"
            )
        ids.extend(found.values())
    return ids


def _permissions(values: list) -> list[str]:
    for value in values:
        if not isinstance(value, str) or not PERMISSION_FORMAT.match(value):
            raise ValueError(
                f"permissions holds {value!r}: expected 'app_label.codename', "
                "e.g. 'shop.view_order'"
            )
    return values


def _content_type_ids(values: list) -> list[int]:
    from django.apps import apps
    from django.contrib.contenttypes.models import ContentType
    from django.db import models

    ids = []
    for value in values:
        if isinstance(value, str):
            try:
                model = apps.get_model(value)
            except (LookupError, ValueError):
                raise ValueError(
                    f"models holds {value!r}: no such model (expected "
                    "'app_label.model', e.g. 'shop.order')"
                ) from None
        elif isinstance(value, type) and issubclass(value, models.Model):
            model = value
        elif isinstance(value, models.Model):
            model = type(value)
        else:
            raise TypeError(
                f"models holds {value!r}: expected a model class, an instance "
                "or 'app_label.model'"
            )
        if model._meta.abstract:
            raise ValueError(f"models holds {model.__name__}, an abstract model")
        # As the admin logs it: a proxy model has a content type of its own.
        content_type = ContentType.objects.get_for_model(
            model, for_concrete_model=False
        )
        ids.append(content_type.pk)
    return ids
