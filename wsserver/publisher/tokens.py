"""Tokens for the sidecar, in the scope it expects."""

from __future__ import annotations

from sesame.utils import get_token

from . import conf


def token_for(user) -> str:
    """A django-sesame token for ``user`` in WSSERVER_SESAME_SCOPE, the sidecar's."""
    return get_token(user, scope=conf.sesame_scope())
