"""Catch every LogEntry the admin writes, including bulk ones.

``post_save`` sees entries saved one at a time. The admin's multi-object
actions go through ``LogEntryManager.log_actions()``, which uses
``bulk_create()`` and sends no signal; wrapping that method catches them. An
entry carries a mark once published so that it is never published twice.
"""

from __future__ import annotations

import functools

from django.contrib.admin.models import LogEntry, LogEntryManager
from django.db.models.signals import post_save

from .publishing import publish_on_commit

PUBLISHED = "_wsserver_published"


def on_log_entry_saved(sender, instance: LogEntry, created: bool, using: str, **kwargs):
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


def connect() -> None:
    post_save.connect(
        on_log_entry_saved, sender=LogEntry, dispatch_uid="wsserver.publisher"
    )
    if not getattr(LogEntryManager.log_actions, "wsserver_publishing", False):
        LogEntryManager.log_actions = _publishing_log_actions(
            LogEntryManager.log_actions
        )
