"""What a token's length says about the main site: for ``python -m wsserver check``.

A main site and a sidecar that disagree on the user pk type reject every
token without saying why; the doctor (:mod:`wsserver.doctor`) uses this to
name the likely fix. Authentication itself never needs it.
"""

from __future__ import annotations

import base64
import binascii

from sesame import settings as sesame_settings

from .pktypes import PK_TYPES

__all__ = ["token_pk_types"]


def token_pk_types(token: str) -> set[str]:
    """The user pk types whose packing gives a token of this length.

    A main site and a sidecar that disagree on the pk type reject every token;
    the length of a token tells which types could have made it. Empty with a
    custom SESAME_PACKER (its sizes are unknown) or for a token that is not
    base64url.
    """
    if sesame_settings.PACKER is not None:
        return set()
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return set()
    overhead = sesame_settings.SIGNATURE_SIZE
    if sesame_settings.MAX_AGE is not None:
        overhead += 4
    return {
        name
        for name, pk_type in PK_TYPES.items()
        if len(data) == pk_type.packed_size + overhead
    }
