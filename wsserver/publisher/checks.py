"""System checks for the live admin (``WSSERVER_ADMIN``): ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Warning, register
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import NoReverseMatch, reverse

from . import conf


@register()
def check_redis(app_configs: Any = None, **kwargs: Any) -> list:
    """WSSERVER_REDIS_URL, WSSERVER_REDIS_CLUSTER and WSSERVER_REDIS_CA_FILE
    make sense together (the server itself is checked on first use)."""
    from django.core.exceptions import ImproperlyConfigured

    from .publishing import target

    try:
        target()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="wsserver.E003")]
    return []


@register()
def check_admin(app_configs: Any = None, **kwargs: Any) -> list:
    """WSSERVER_ADMIN needs WSSERVER_URL, the publisher's URLs, and its template."""
    if not conf.admin():
        return []
    problems: list = []
    url = conf.url()
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        problems.append(
            Error(
                f"WSSERVER_URL is {url!r}: with WSSERVER_ADMIN, set it to the "
                "sidecar's address as browsers reach it, e.g. 'wss://ws.example.com/'.",
                id="wsserver.E001",
            )
        )
    try:
        reverse("wsserver-token")
        reverse("wsserver-jsi18n")
    except NoReverseMatch:
        problems.append(
            Error(
                "WSSERVER_ADMIN needs the publisher's URLs: add "
                'path("wsserver/", include("wsserver.publisher.urls")) to the URLconf.',
                id="wsserver.E002",
            )
        )
    if not _template_adds_the_live_admin():
        problems.append(
            Warning(
                "WSSERVER_ADMIN is on but admin pages will not load it: list "
                '"wsserver.publisher" before "django.contrib.admin" in '
                "INSTALLED_APPS, or, if the site has an admin/base_site.html of "
                "its own, add {% load wsserver %}{% wsserver_admin %} to its "
                "extrahead block.",
                id="wsserver.W001",
            )
        )
    return problems


def _template_adds_the_live_admin() -> bool:
    if not apps.is_installed("django.contrib.admin"):
        return True  # no admin, nothing to add
    try:
        template = get_template("admin/base_site.html")
    except TemplateDoesNotExist:
        return False
    origin = getattr(template, "origin", None)
    name = str(getattr(origin, "name", ""))
    if name.replace("\\", "/").endswith(
        "wsserver/publisher/templates/admin/base_site.html"
    ):
        return True
    try:
        with open(name, encoding="utf-8") as source:
            return "wsserver_admin" in source.read()
    except OSError:
        return bool(getattr(settings, "WSSERVER_ADMIN_TEMPLATE_CHECKED", False))
