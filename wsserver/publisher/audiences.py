"""Ready audience callables for ``WSSERVER_MODELS``.

::

    WSSERVER_MODELS = {"support.Ticket": "wsserver.publisher.audiences.guardian"}

Each takes ``(instance, action)`` and returns
:func:`~wsserver.publisher.publish`'s audience keywords.
"""

from __future__ import annotations

from django.db import models


def guardian(instance: models.Model, action: str) -> dict:
    """Users and groups with django-guardian's object permission to view
    ``instance`` (``<app_label>.view_<model>`` on that object).

    Users with the permission only through a group are reached through the
    group; superusers and holders of the model-wide permission are not
    included (list them with a callable of your own if they should be). For an
    addition, give the object permissions in the transaction that creates the
    object: the audience is computed when it commits (without a transaction,
    at once, before any permission exists).

    For a deletion, the audience is computed in ``pre_delete``, before the
    row is deleted. django-guardian leaves the object's permissions behind:
    if the site removes them, do it in ``post_delete`` or in
    ``transaction.on_commit()``, not in ``pre_delete``, where a receiver
    connected before the publisher's empties the deletion's audience and
    nobody is told.
    """
    from guardian.shortcuts import get_groups_with_perms, get_users_with_perms

    codename = f"view_{instance._meta.concrete_model._meta.model_name}"
    users = get_users_with_perms(
        instance,
        only_with_perms_in=[codename],
        with_group_users=False,
        with_superusers=False,
    )
    groups = get_groups_with_perms(instance, only_with_perms_in=[codename])
    return {
        "users": list(users.values_list("pk", flat=True)),
        "groups": list(groups.values_list("pk", flat=True)),
    }
