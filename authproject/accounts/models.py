"""An unmanaged model mapped onto the main site's user table.

It declares only what authentication and permissions read: the primary key
with the main site's exact type (tokens pack it), password (tokens die with
it), is_active, is_superuser, the username field and, when tokens die with
the email, the email field. Groups and permissions come from PermissionsMixin:
Django names their join tables after ``db_table`` and their user column after
the class name, which is why the class name is configurable.
"""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models

from wsserver.config import get_config

__all__ = ["build_user_model"]

PRIMARY_KEYS = {
    "int": lambda: models.AutoField(primary_key=True),
    "bigint": lambda: models.BigAutoField(primary_key=True),
    "uuid": lambda: models.UUIDField(primary_key=True),
}


def build_user_model() -> type[models.Model]:
    user_model = get_config().user_model
    attrs = {
        "__module__": __name__,
        "Meta": type(
            "Meta",
            (),
            {"db_table": user_model.table, "managed": False, "app_label": "accounts"},
        ),
        "id": PRIMARY_KEYS[user_model.pk_type](),
        "is_active": models.BooleanField(default=True),
        user_model.username_field: models.CharField(max_length=254, unique=True),
        "USERNAME_FIELD": user_model.username_field,
        "EMAIL_FIELD": user_model.email_field,
        "REQUIRED_FIELDS": [],
        "objects": BaseUserManager(),
    }
    invalidate_on_email = get_config().sesame["SESAME_INVALIDATE_ON_EMAIL_CHANGE"]
    if invalidate_on_email and user_model.email_field != user_model.username_field:
        attrs[user_model.email_field] = models.CharField(max_length=254, blank=True)
    return type(user_model.class_name, (AbstractBaseUser, PermissionsMixin), attrs)


if get_config().user_model.custom:
    globals()[get_config().user_model.class_name] = build_user_model()
