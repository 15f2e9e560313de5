"""Every close the sidecar initiates, in one place (the README's table).

1011: get a new token. 1012, 1013, 1000: reconnect later. 1008: do not
reconnect.
"""

from __future__ import annotations

from websockets.frames import CloseCode

AUTHENTICATION_FAILED = (CloseCode.INTERNAL_ERROR, "authentication failed")
AUTHENTICATION_TIMEOUT = (CloseCode.POLICY_VIOLATION, "authentication timeout")
TOO_MANY_CONNECTIONS = (CloseCode.POLICY_VIOLATION, "too many connections")
TRY_AGAIN_LATER = (CloseCode.TRY_AGAIN_LATER, "try again later")
CLIENT_TOO_SLOW = (CloseCode.TRY_AGAIN_LATER, "client too slow")
SERVER_RESTART = (CloseCode.SERVICE_RESTART, "server restarting")
ACCESS_REVOKED = (CloseCode.POLICY_VIOLATION, "access revoked")
KEEPALIVE_TIMEOUT = (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
CONNECTION_EXPIRED = (CloseCode.NORMAL_CLOSURE, "connection expired")
INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal error")
