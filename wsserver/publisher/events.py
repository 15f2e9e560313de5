"""Turn an admin LogEntry into the JSON event that the sidecar broadcasts."""

from __future__ import annotations

import json

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

ACTIONS = {ADDITION: "addition", CHANGE: "change", DELETION: "deletion"}


def event_for(entry: LogEntry) -> dict | None:
    """The guide's fields plus ``action``; None for entries without a model."""
    if entry.content_type_id is None:
        return None
    return {
        "model": entry.content_type.name,
        "object": entry.object_repr,
        "message": entry.get_change_message(),
        "timestamp": entry.action_time.isoformat(),
        "user": str(entry.user),
        "content_type_id": entry.content_type_id,
        # A text column; log_actions() leaves the unsaved pk on the instance.
        "object_id": None if entry.object_id is None else str(entry.object_id),
        "action": ACTIONS.get(entry.action_flag, str(entry.action_flag)),
    }


def serialize(event: dict) -> str:
    """An event as the compact JSON text published: non-ASCII kept, values
    that JSON has no type for as str() (publish() refuses those beforehand)."""
    return json.dumps(event, ensure_ascii=False, default=str, separators=(",", ":"))
