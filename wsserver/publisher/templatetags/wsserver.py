"""Template tags of the publisher app: ``{% load wsserver %}``.

``{% wsserver_token %}``
    A token for the logged-in user; an empty string for anonymous users.
    Tokens are short-lived: a page that reconnects should fetch a fresh one
    from the token view instead.
``{% wsserver_admin %}``
    In an admin page's ``extrahead``: the live admin (stale-form warnings,
    change-list counts, notifications), when ``WSSERVER_ADMIN`` is on and a
    staff user is logged in; nothing otherwise. The publisher's
    ``admin/base_site.html`` adds it to every admin page.
"""

from __future__ import annotations

import logging

from django import template
from django.contrib.contenttypes.models import ContentType
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from .. import conf
from ..tokens import token_for

register = template.Library()

logger = logging.getLogger("wsserver.publisher")


@register.simple_tag(takes_context=True)
def wsserver_token(context) -> str:
    """A token for the request's user; "" if anonymous or without a request."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    return token_for(user)


@register.simple_tag(takes_context=True)
def wsserver_admin(context) -> str:
    """The live admin's stylesheet, translations, configuration and script."""
    if not conf.admin() or not conf.url():
        return ""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_staff:
        return ""
    try:
        token_url = reverse("wsserver-token")
        jsi18n_url = reverse("wsserver-jsi18n")
    except NoReverseMatch:
        logger.warning(
            "WSSERVER_ADMIN is on but the publisher's URLs are not included: add "
            'path("wsserver/", include("wsserver.publisher.urls")) to the URLconf'
        )
        return ""
    config = {
        "url": conf.url(),
        "tokenUrl": token_url,
        # As LogEntry.user is shown in events: str(user).
        "user": str(user),
        "page": "other",
    }
    opts = context.get("opts")
    model = getattr(opts, "model", None)
    if model is not None:
        # As the admin logs it (a proxy model has its own content type).
        content_type = ContentType.objects.get_for_model(
            model, for_concrete_model=False
        )
        config["contentTypeId"] = content_type.pk
        config["modelName"] = opts.model_name
        original = context.get("original")
        if context.get("cl") is not None:
            config["page"] = "change_list"
        elif (
            original is not None
            and context.get("change")
            and not context.get("add")
            and "adminform" in context
        ):
            config["page"] = "change_form"
            config["objectId"] = str(original.pk)
    return render_to_string(
        "wsserver/admin.html", {"config": config, "jsi18n_url": jsi18n_url}
    )
