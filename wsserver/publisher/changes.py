"""Publish saves and deletes of the models listed in ``WSSERVER_MODELS``.

::

    WSSERVER_MODELS = {
        "shop.Order": None,  # who may view or change the model, as admin events
        "support.Ticket": "support.audiences.ticket",  # callable(instance, action)
    }

Every ``save()`` and ``delete()`` of a listed model, from anywhere (views,
forms, the shell, Celery tasks, management commands), publishes an event of
the admin's shape (``action`` ``"addition"``, ``"change"`` or ``"deletion"``,
``model``, ``object``, ``object_id``, ``content_type_id``, ``user``, an
empty ``message``, ``timestamp``) when (and only if) its transaction commits.

- ``None``: the event is routed like an admin event, to whoever may view or
  change the model (and active superusers).
- A dotted path to (or a) callable ``audience(instance, action)`` returning
  :func:`~wsserver.publisher.publish`'s audience keywords, e.g.
  ``{"users": [instance.owner], "groups": ["support"]}``: the event goes to
  them only (superusers receive ``users``/``groups`` audiences only when
  named). For additions and changes it is called when the transaction
  commits, so that permissions given in the same transaction count; for
  deletions, before the row is deleted. An empty audience sends nothing; a
  callable that raises is logged with its traceback and nothing is sent (never
  to a wider audience), and the save goes on. :func:`.audiences.guardian` is
  one for django-guardian sites.

``user`` is ``str(user)`` of the user who made the change, as in admin
events, when known: in the admin, in requests going through
:class:`wsserver.publisher.middleware.CurrentUserMiddleware`, and inside
``with acting_user(user):`` (e.g. in a Celery task); otherwise ``null``.

Not published: ``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``
and raw SQL, which send no signal; fixtures loaded with ``loaddata`` (raw
saves). Saves of proxy instances count for their concrete model when that
one is listed.

The admin logs its own changes as ``LogEntry`` objects, which are published
already: while one of its views runs (the change form, the delete view, the
change list with its actions and ``list_editable``), an object it logs is
published once, from its ``LogEntry`` (with the admin's change message), and
for a model listed with a callable, to the callable's audience (see
:mod:`.signals`). Changes it does not log (inlines, objects deleted in
cascade, actions that save without logging) are published here as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_delete
from django.utils import timezone
from django.utils.module_loading import import_string

logger = logging.getLogger("wsserver.publisher")

ADDITION, CHANGE, DELETION = "addition", "change", "deletion"

AudienceCallable = Callable[[models.Model, str], dict]


@dataclasses.dataclass(frozen=True)
class Listed:
    """A model of WSSERVER_MODELS and its audience (None: the model's)."""

    label: str
    model: type[models.Model]
    audience: AudienceCallable | None = None

    def content_type(self):
        from django.contrib.contenttypes.models import ContentType

        return ContentType.objects.get_for_model(self.model, for_concrete_model=False)

    def event(self, instance: models.Model, action: str) -> dict:
        """The admin's shape, in the order of admin events (see events.py)."""
        content_type = self.content_type()
        return {
            "model": content_type.name,
            "object": str(instance)[:200],  # as the admin's object_repr
            "message": "",
            "timestamp": timezone.now().isoformat(),
            "user": current_username(),
            "content_type_id": content_type.pk,
            "object_id": str(instance.pk),
            "action": action,
        }

    def resolve(self, instance: models.Model, action: str) -> str | None:
        """The callable's audience as JSON; None: send nothing (empty, or the
        callable failed: logged)."""
        from .publishing import resolve_audience

        assert self.audience is not None
        using = instance._state.db or "default"
        try:
            # A savepoint: a failed query of the callable must not abort the
            # caller's transaction (PostgreSQL).
            atomic = (
                transaction.atomic(using=using)
                if transaction.get_connection(using).in_atomic_block
                else contextlib.nullcontext()
            )
            with atomic:
                keywords = self.audience(instance, action)
                if not keywords or not any(keywords.values()):
                    logger.debug(
                        "no audience for the %s of %s %r: not published",
                        action,
                        self.label,
                        instance.pk,
                    )
                    return None
                return resolve_audience(**keywords)
        except Exception:
            logger.exception(
                "the WSSERVER_MODELS audience of %s failed for the %s of %r "
                "(pk %r): not published",
                self.label,
                action,
                instance,
                instance.pk,
            )
            return None

    def outgoing(self, instance: models.Model, action: str, event: dict):
        """The message to send, audience resolved now; None: nothing to send."""
        from .publishing import Outgoing

        if self.audience is None:
            return Outgoing(event, content_type_id=event["content_type_id"])
        audience = self.resolve(instance, action)
        if audience is None:
            return None
        return Outgoing(
            event, content_type_id=event["content_type_id"], audience=audience
        )


# The listed models, by model class; set by connect() when Django is ready.
_listed: dict[type[models.Model], Listed] = {}


def load(setting: Any) -> dict[type[models.Model], Listed]:
    """Check WSSERVER_MODELS; raise ImproperlyConfigured naming a bad entry."""
    if setting is None:
        return {}
    if not isinstance(setting, dict):
        raise ImproperlyConfigured(
            "WSSERVER_MODELS must be a dict of 'app_label.Model' to None or the "
            f"dotted path of an audience callable, not {type(setting).__name__}"
        )
    listed = {}
    for label, audience in setting.items():
        entry = f"WSSERVER_MODELS[{label!r}]"
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"{entry}: no such model ({exc})") from None
        if isinstance(audience, str):
            try:
                audience = import_string(audience)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"{entry}: cannot import the audience {setting[label]!r} ({exc})"
                ) from None
        if audience is not None and not callable(audience):
            raise ImproperlyConfigured(
                f"{entry}: the audience must be None, a callable or its dotted "
                f"path, not {setting[label]!r}"
            )
        listed[model] = Listed(label, model, audience)
    return listed


def listed_for(model: type[models.Model]) -> Listed | None:
    """The entry of this model, or of its concrete model (for proxies)."""
    return _listed.get(model) or _listed.get(model._meta.concrete_model)


# Who is making changes, when known.

_user: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "wsserver_user", default=None
)


@contextlib.contextmanager
def acting_user(user: Any) -> Iterator[None]:
    """Name ``user`` as the author of the changes published meanwhile (e.g.
    in a Celery task). ``user`` may be lazy, like ``request.user``."""
    token = _user.set(user)
    try:
        yield
    finally:
        _user.reset(token)


def current_username() -> str | None:
    """``str(user)`` of the user set by acting_user(), if authenticated."""
    user = _user.get()
    try:
        if user is None or not user.is_authenticated:
            return None
        return str(user)
    except Exception:  # e.g. the session's user cannot be loaded
        logger.exception("cannot tell the user making a change")
        return None


# The admin's views: what they log is published from the LogEntry, once.


class AdminScope:
    """While an admin view runs: the objects it logged, and the model-change
    events waiting for their commit (cancelled if the admin logs the object)."""

    def __init__(self) -> None:
        self.logged: set[tuple[type[models.Model], str]] = set()
        self.pending: dict[tuple[type[models.Model], str], list[Pending]] = {}
        # Events whose commit came while the view runs (autocommit: at once):
        # sent when it returns, unless the admin logged their object meanwhile.
        self.active = True
        self.ready: list = []

    def close(self) -> None:
        self.active = False
        ready, self.ready = self.ready, []
        for pending, send_it in ready:
            if not pending.cancelled:
                send_it()

    def log(self, key: tuple[type[models.Model], str]) -> None:
        self.logged.add(key)
        for pending in self.pending.pop(key, []):
            pending.cancelled = True


@dataclasses.dataclass
class Pending:
    cancelled: bool = False


_admin_scope: contextvars.ContextVar[AdminScope | None] = contextvars.ContextVar(
    "wsserver_admin_scope", default=None
)


def _key(model: type[models.Model], pk: Any) -> tuple[type[models.Model], str]:
    return (model._meta.concrete_model, str(pk))


def logged_by_admin(model: type[models.Model], pk: Any) -> None:
    """The admin logged this object (LogEntryManager.log_actions): within the
    running admin view, its model-change events are not published."""
    scope = _admin_scope.get()
    if scope is not None:
        scope.log(_key(model, pk))


@contextlib.contextmanager
def _admin_scope_of(request):
    """While an admin view runs: its user, and the scope that drops the
    model-change events of the objects it logs (nested views share one)."""
    if _admin_scope.get() is not None:  # nested: the outer view's scope
        yield
        return
    scope = AdminScope()
    scope_token = _admin_scope.set(scope)
    user_token = _user.set(getattr(request, "user", None))
    try:
        yield
    finally:
        try:
            scope.close()
        finally:
            _user.reset(user_token)
            _admin_scope.reset(scope_token)


def _admin_view(view):
    """A ModelAdmin view (a method) run in an admin scope."""

    @functools.wraps(view)
    def wrapper(self, request, *args, **kwargs):
        with _admin_scope_of(request):
            return view(self, request, *args, **kwargs)

    wrapper.wsserver_admin_scope = True
    return wrapper


ADMIN_VIEWS = ("changeform_view", "delete_view", "changelist_view")


def _scoped(view):
    """A view given to AdminSite.admin_view, run in an admin scope."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        with _admin_scope_of(request):
            return view(request, *args, **kwargs)

    return wrapper


def wrap_admin_views() -> None:
    """Wrap the ModelAdmin views that log changes; calling it again is harmless."""
    from django.contrib.admin import AdminSite, ModelAdmin

    original = AdminSite.admin_view
    if not getattr(original, "wsserver_admin_scope", False):

        def admin_view(self, view, cacheable=False):
            return original(self, _scoped(view), cacheable)

        admin_view.wsserver_admin_scope = True
        AdminSite.admin_view = admin_view

    for name in ADMIN_VIEWS:
        view = getattr(ModelAdmin, name)
        if not getattr(view, "wsserver_admin_scope", False):
            setattr(ModelAdmin, name, _admin_view(view))


# Sending


def _send(messages: list) -> None:
    from .publishing import send

    messages = [message for message in messages if message is not None]
    if messages:
        send(messages)


def on_commit_resolved(
    listed: Listed, instance: models.Model, action: str, event: dict, using: str
) -> Pending:
    """Send the event after the commit, its audience resolved then; unless
    the returned Pending is cancelled meanwhile."""
    pending = Pending()
    scope = _admin_scope.get()

    def send_now() -> None:
        if not pending.cancelled:
            _send([listed.outgoing(instance, action, event)])

    def send_it() -> None:
        if scope is not None and scope.active:
            scope.ready.append((pending, send_now))
        else:
            send_now()

    transaction.on_commit(send_it, using=using)
    return pending


def on_saved(sender, instance, created, raw, using, **kwargs) -> None:
    """A listed model was saved: publish it after the commit."""
    listed = listed_for(sender)
    if listed is None or raw:
        return
    scope = _admin_scope.get()
    key = _key(sender, instance.pk)
    if scope is not None and key in scope.logged:
        return
    action = ADDITION if created else CHANGE
    pending = on_commit_resolved(
        listed, instance, action, listed.event(instance, action), using
    )
    if scope is not None:
        scope.pending.setdefault(key, []).append(pending)


_DELETING = "_wsserver_deleting"


def on_deleting(sender, instance, using, **kwargs) -> None:
    """Before the delete: the event and its audience, while the rows exist."""
    listed = listed_for(sender)
    if listed is None:
        return
    scope = _admin_scope.get()
    if scope is not None and _key(sender, instance.pk) in scope.logged:
        return
    event = listed.event(instance, DELETION)
    instance.__dict__[_DELETING] = listed.outgoing(instance, DELETION, event)


def on_deleted(sender, instance, using, **kwargs) -> None:
    """Deleted: send what on_deleting prepared, after the commit."""
    outgoing = instance.__dict__.pop(_DELETING, None)
    if outgoing is not None:
        transaction.on_commit(lambda: _send([outgoing]), using=using)


def connect() -> None:
    """Read WSSERVER_MODELS and connect the handlers; calling it again is
    harmless (it reads the setting again)."""
    global _listed
    _listed = load(getattr(settings, "WSSERVER_MODELS", None))
    wrap_admin_views()
    for signal in (post_save, pre_delete, post_delete):
        signal.disconnect(dispatch_uid="wsserver.models")
    for model in _delete_senders:
        for signal in (pre_delete, post_delete):
            signal.disconnect(sender=model, dispatch_uid="wsserver.models")
    _delete_senders.clear()
    if not _listed:
        return
    # Saves: every model's signal, filtered by a dict lookup (a save has no
    # fast path to lose). Deletes: the listed models and their proxies only,
    # so that every other model keeps Django's fast delete.
    post_save.connect(on_saved, dispatch_uid="wsserver.models")
    for model in apps.get_models():
        if listed_for(model) is not None:
            pre_delete.connect(
                on_deleting, sender=model, dispatch_uid="wsserver.models"
            )
            post_delete.connect(
                on_deleted, sender=model, dispatch_uid="wsserver.models"
            )
            _delete_senders.append(model)


_delete_senders: list = []
