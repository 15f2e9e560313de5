"""Catch every LogEntry the admin writes, and every change of access.

``post_save`` sees entries saved one at a time. The admin's multi-object
actions go through ``LogEntryManager.log_actions()``, which uses
``bulk_create()`` and sends no signal; wrapping that method catches them. An
entry carries a mark once published so that it is never published twice.

An entry for a model listed in ``WSSERVER_MODELS`` with an audience callable
goes to the callable's audience, computed from the logged object (still in
the database when the admin logs a deletion: it logs first), not to the
model's: per-object rules hold in the admin too. An entry of such a model
whose object cannot be read is not published (and logged). See
:mod:`.changes`, which publishes the changes made outside the admin.

Changes to users, group memberships and permissions send control messages
(see :mod:`wsserver.control`) so that every sidecar rechecks the connections
concerned: a deactivated user is disconnected, a lost permission stops the
next event. Membership rows removed by ``clear()`` or by deleting a group are
read before they disappear.
"""

from __future__ import annotations

import contextvars
import functools
import logging

from django.contrib.admin.models import DELETION, LogEntry, LogEntryManager
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from . import changes
from .events import event_for
from .publishing import Outgoing, publish_control_on_commit, send

logger = logging.getLogger("wsserver.publisher")

PUBLISHED = "_wsserver_published"

# True while log_actions() runs: its entries are published by its wrapper,
# which knows their objects.
_in_log_actions: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "wsserver_in_log_actions", default=False
)


def on_log_entry_saved(sender, instance: LogEntry, created: bool, using: str, **kwargs):
    """A new LogEntry: publish it after the commit, unless it already was."""
    if not created or getattr(instance, PUBLISHED, False) or _in_log_actions.get():
        return
    setattr(instance, PUBLISHED, True)
    model = instance.content_type.model_class() if instance.content_type_id else None
    if model is not None and instance.object_id is not None:
        changes.logged_by_admin(model, instance.object_id)
    obj = _edited_object(instance)
    publish_on_commit([(instance, obj)], using=using)


def _edited_object(entry: LogEntry) -> models.Model | None:
    """The object of an entry saved outside log_actions(), if its model is
    listed with an audience callable (else not needed: None)."""
    if entry.content_type_id is None:
        return None
    model = entry.content_type.model_class()
    listed = model and changes.listed_for(model)
    if listed is None or listed.audience is None:
        return None
    try:
        return entry.get_edited_object()
    except Exception:
        return None


def publish_on_commit(
    entries: list[tuple[LogEntry, models.Model | None]], using: str | None = None
) -> None:
    """Publish these entries (with their objects, when known) after the commit.

    The payloads are built now, while the entries' related rows are readable.
    The audience of a listed model's callable is computed now for deletions
    (the rows go next) and after the commit otherwise, as for changes made
    outside the admin.
    """
    ready: list[Outgoing] = []
    later: list[tuple[changes.Listed, models.Model, str, dict]] = []
    for entry, obj in entries:
        event = event_for(_without_per_object_inlines(entry))
        if event is None:
            continue
        model = entry.content_type.model_class()
        listed = model and changes.listed_for(model)
        if listed is None or listed.audience is None:
            ready.append(Outgoing(event, content_type_id=event["content_type_id"]))
        elif obj is None:
            logger.error(
                "cannot read the object of the admin's log entry %s (%s %r): "
                "not published, since its WSSERVER_MODELS audience needs it",
                entry.pk,
                listed.label,
                entry.object_id,
            )
        elif entry.action_flag == DELETION:
            if outgoing := listed.outgoing(obj, event["action"], event):
                ready.append(outgoing)
        else:
            later.append((listed, obj, event["action"], event))
    if not (ready or later):
        return

    def send_them() -> None:
        messages = ready + [
            outgoing
            for listed, obj, action, event in later
            if (outgoing := listed.outgoing(obj, action, event))
        ]
        if messages:
            send(messages)

    transaction.on_commit(send_them, using=using)


def _without_per_object_inlines(entry: LogEntry) -> LogEntry:
    """The entry, or a copy whose change message leaves out the inline
    objects of models listed with an audience callable: their str() must not
    reach the parent's audience."""
    import copy
    import json

    from django.utils import translation

    try:
        message = json.loads(entry.change_message)
    except ValueError:
        return entry
    if not isinstance(message, list):
        return entry
    with translation.override(None):  # as construct_change_message() wrote it
        private = {
            str(model._meta.verbose_name)
            for model, listed in changes._listed.items()
            if listed.audience is not None
        }
    kept = [
        part
        for part in message
        if not (
            isinstance(part, dict)
            and any(
                isinstance(value, dict) and value.get("name") in private
                for value in part.values()
            )
        )
    ]
    if len(kept) == len(message):
        return entry
    entry = copy.copy(entry)
    entry.change_message = json.dumps(kept)
    return entry


def _publishing_log_actions(log_actions):
    @functools.wraps(log_actions)
    def wrapper(self, user_id, queryset, *args, **kwargs):
        # Evaluated once: a QuerySet keeps its results for log_actions().
        objects = list(queryset)
        if not isinstance(queryset, models.QuerySet):
            queryset = objects
        token = _in_log_actions.set(True)
        try:
            result = log_actions(self, user_id, queryset, *args, **kwargs)
        finally:
            _in_log_actions.reset(token)
        entries = result if isinstance(result, list) else [result]
        by_key = {}
        for obj in objects:
            by_key[(type(obj), str(obj.pk))] = obj
            changes.logged_by_admin(type(obj), obj.pk)
        unpublished = []
        for entry in entries:
            if isinstance(entry, LogEntry) and not getattr(entry, PUBLISHED, False):
                setattr(entry, PUBLISHED, True)
                model = (
                    entry.content_type.model_class() if entry.content_type_id else None
                )
                unpublished.append((entry, by_key.get((model, str(entry.object_id)))))
        publish_on_commit(unpublished, using=self.db)
        return result

    wrapper.wsserver_publishing = True
    return wrapper


def users_changed(user_ids, using: str | None) -> None:
    """Tell the sidecars, after the commit, that these users' access may have
    changed: one message for all of them.
    """
    user_ids = sorted({str(user_id) for user_id in user_ids if user_id is not None})
    if user_ids:
        publish_control_on_commit({"type": "users", "user_ids": user_ids}, using)


def groups_changed(group_ids, using: str | None) -> None:
    """Tell the sidecars, after the commit, that these groups' permissions
    changed: one message per group.
    """
    for group_id in sorted(set(group_ids)):
        publish_control_on_commit({"type": "group", "group_id": group_id}, using)


# Saves of these fields only change no access: django.contrib.auth's
# update_last_login saves last_login alone on every login. (last_login would
# revoke tokens only with SESAME_ONE_TIME, which the sidecar refuses.)
NO_ACCESS_FIELDS = frozenset({"last_login"})


def on_user_saved_or_deleted(
    sender, instance, using: str, update_fields=None, **kwargs
) -> None:
    """A user was saved or deleted: recheck their connections.

    Any save may change access (is_active, is_superuser, the password that
    revokes tokens); a deletion ends it. A save of last_login alone (every
    login) sends nothing.
    """
    if update_fields and frozenset(update_fields) <= NO_ACCESS_FIELDS:
        return
    users_changed([instance.pk], using)


def on_group_deleted(sender, instance, using: str, **kwargs) -> None:
    """A group is about to be deleted: its members lose its permissions."""
    # The membership rows go with the group: read them first.
    users_changed(_column(get_user_model().groups.through, Group, instance.pk), using)


def _column(through, target_model, target_pk):
    """The other side's pks of a join table's rows pointing to target_pk."""
    [to_target] = [f for f in through._meta.fields if f.related_model is target_model]
    [other] = [
        f
        for f in through._meta.fields
        if f.is_relation and f.related_model is not target_model
    ]
    rows = through._default_manager.filter(**{to_target.attname: target_pk})
    return list(rows.values_list(other.attname, flat=True))


def on_m2m_changed(sender, instance, action, reverse, model, pk_set, using, **kwargs):
    """Membership or permission rows changed; read cleared rows before clear()."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if action == "pre_clear":
        pk_set = _column(sender, type(instance), instance.pk) if reverse else None
    changed = (pk_set or []) if reverse else [instance.pk]
    if sender is Group.permissions.through:
        groups_changed(changed, using)
    else:  # the user model's groups or user_permissions
        users_changed(changed, using)


def connect() -> None:
    """Connect the handlers and wrap ``log_actions()``; calling it again is harmless."""
    post_save.connect(
        on_log_entry_saved, sender=LogEntry, dispatch_uid="wsserver.publisher"
    )
    User = get_user_model()
    for signal in (post_save, post_delete):
        signal.connect(
            on_user_saved_or_deleted, sender=User, dispatch_uid="wsserver.user"
        )
    pre_delete.connect(on_group_deleted, sender=Group, dispatch_uid="wsserver.group")
    for through in (
        User.groups.through,
        User.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            on_m2m_changed, sender=through, dispatch_uid=f"wsserver.{through}"
        )
    if not getattr(LogEntryManager.log_actions, "wsserver_publishing", False):
        LogEntryManager.log_actions = _publishing_log_actions(
            LogEntryManager.log_actions
        )
