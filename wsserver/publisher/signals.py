"""Catch every LogEntry the admin writes, and every change of access.

``post_save`` sees entries saved one at a time. The admin's multi-object
actions go through ``LogEntryManager.log_actions()``, which uses
``bulk_create()`` and sends no signal; wrapping that method catches them. An
entry carries a mark once published so that it is never published twice.

Changes to users, group memberships and permissions send control messages
(see :mod:`wsserver.control`) so that every sidecar rechecks the connections
concerned: a deactivated user is disconnected, a lost permission stops the
next event. Membership rows removed by ``clear()`` or by deleting a group are
read before they disappear.
"""

from __future__ import annotations

import functools

from django.contrib.admin.models import LogEntry, LogEntryManager
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from .publishing import publish_control_on_commit, publish_on_commit

PUBLISHED = "_wsserver_published"


def on_log_entry_saved(sender, instance: LogEntry, created: bool, using: str, **kwargs):
    """A new LogEntry: publish it after the commit, unless it already was."""
    if created and not getattr(instance, PUBLISHED, False):
        setattr(instance, PUBLISHED, True)
        publish_on_commit([instance], using=using)


def _publishing_log_actions(log_actions):
    @functools.wraps(log_actions)
    def wrapper(self, *args, **kwargs):
        result = log_actions(self, *args, **kwargs)
        entries = result if isinstance(result, list) else [result]
        unpublished = [
            entry
            for entry in entries
            if isinstance(entry, LogEntry) and not getattr(entry, PUBLISHED, False)
        ]
        for entry in unpublished:
            setattr(entry, PUBLISHED, True)
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


def on_user_saved_or_deleted(sender, instance, using: str, **kwargs) -> None:
    """A user was saved or deleted: recheck their connections.

    Any save may change access (is_active, is_superuser, the password that
    revokes tokens); a deletion ends it.
    """
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
