"""``{% load wsserver %}{% wsserver_token %}``: a token for the logged-in user.

Renders an empty string for anonymous users. Tokens are short-lived: a page
that reconnects should fetch a fresh one from the token view instead.
"""

from __future__ import annotations

from django import template

from ..tokens import token_for

register = template.Library()


@register.simple_tag(takes_context=True)
def wsserver_token(context) -> str:
    """A token for the request's user; "" if anonymous or without a request."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    return token_for(user)
