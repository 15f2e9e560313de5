"""Sign-in: a connection's first message, from token to registered connection.

The client has ``WS_AUTH_TIMEOUT`` seconds to send its first message (the
token, with the event id to resume after) and for it to be decided. Tokens
are authenticated in batches (one query for many connections under load),
and a principal read while a change of its user went by is confirmed by
:meth:`wsserver.rechecks.Rechecks.confirm` before anything is routed to it.
Then the connection is registered with the delivery core, unless its user
has ``WS_MAX_CONNECTIONS_PER_USER`` already. Every refusal closes without
waiting and is counted by its result.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from websockets.exceptions import ConnectionClosed

from .closes import (
    AUTHENTICATION_FAILED,
    AUTHENTICATION_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    TRY_AGAIN_LATER,
)
from .connection import SidecarConnection
from .counters import Counters
from .database import Batcher, DatabaseUnavailable
from .delivery import Delivery
from .hello import InvalidHello, parse_hello
from .rechecks import Rechecks, reason
from .routing import Principal

if TYPE_CHECKING:
    from .auth import Refused

__all__ = ["SignIn"]

logger = logging.getLogger("wsserver.server")


class Subscriptions(Protocol):
    """On a Redis Cluster: the partitions a connection needs (wsserver.server)."""

    async def wait(self, principal: Principal) -> None:
        """Hold the principal's partitions and wait until they are subscribed
        (holding nothing if it raises)."""

    def release(self, principal: Principal) -> None:
        """Stop holding them (once registered, or refused)."""


class SubscriptionsUnavailable(Exception):
    """The partitions a user follows could not be subscribed to in time."""


class SignIn:
    """Read, authenticate and confirm each connection's token; register it."""

    def __init__(
        self,
        authentications: Batcher[str, Principal | Refused | None],
        rechecks: Rechecks,
        delivery: Delivery[SidecarConnection],
        counters: Counters,
        *,
        timeout: float,
        max_connections_per_user: int,
        max_connection_age: float | None,
        on_registered: Callable[[], None],
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self.authentications = authentications
        # On a Redis Cluster: wait until the partitions the user follows are
        # subscribed to, so that nothing published after the registration
        # is missed.
        self.subscriptions = subscriptions
        self.rechecks = rechecks
        self.delivery = delivery
        self.counters = counters
        self.timeout = timeout
        self.max_connections_per_user = max_connections_per_user
        self.max_connection_age = max_connection_age
        self.on_registered = on_registered

    async def __call__(
        self, connection: SidecarConnection
    ) -> tuple[Principal, str | None] | None:
        """Sign a connection in and route events to it.

        Returns its principal and the event id to resume after, or None when
        the connection was refused (and is closing) or went away.
        """
        authenticated = await self.authenticate(connection)
        if authenticated is None:
            return None
        principal, last_event_id, read = authenticated
        try:
            return self._register(connection, principal, last_event_id, read)
        finally:
            if self.subscriptions is not None:
                # Registered, the connection counts in the partitions itself.
                self.subscriptions.release(authenticated[0])

    def _register(
        self,
        connection: SidecarConnection,
        principal: Principal,
        last_event_id: str | None,
        read: int,
    ) -> tuple[Principal, str | None] | None:
        if not connection.is_open:  # closed during authentication
            return None
        user_connections = self.delivery.router.connections_of(principal.user_id)
        if len(user_connections) >= self.max_connections_per_user:
            logger.warning(
                "Connection %s refused: user %s has %d connections",
                connection.id,
                principal.user_id,
                len(user_connections),
            )
            self.refuse(connection, "limited", TOO_MANY_CONNECTIONS)
            return None
        self.counters.authentications["success"] += 1
        self.delivery.register(connection, principal)
        self.rechecks.registered(principal.user_id, read)
        if self.max_connection_age:
            # Spread over the last tenth of the age: clients that connected
            # together (after a restart) do not all reconnect together.
            connection.expires_at = connection.loop.time() + (
                self.max_connection_age * random.uniform(0.9, 1.0)
            )
        self.on_registered()
        logger.info(
            "Connection %s opened for user %s", connection.id, principal.user_id
        )
        return principal, last_event_id

    async def authenticate(
        self, connection: SidecarConnection
    ) -> tuple[Principal, str | None, int] | None:
        """The connection's principal, resume position and the number of the
        read it comes from; or None, when it was refused or went away."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                token = await connection.recv()
        except TimeoutError:
            self.refuse(connection, "timeout", AUTHENTICATION_TIMEOUT)
            return None
        except ConnectionClosed:  # includes a first frame over max_size: 1009
            return None
        if not isinstance(token, str):
            self.refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        try:
            hello = parse_hello(token)
        except InvalidHello as exc:
            logger.info(
                "Connection %s sent an invalid first message: %s", connection.id, exc
            )
            self.refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        del token
        since, read = self.rechecks.start_read()
        held: Principal | None = None  # its partitions, until registered
        try:
            async with asyncio.timeout_at(deadline):
                result = await self.authentications.call(hello.token)
                why = _why(result)
                principal = None if why else result
                if principal is not None and self.subscriptions is not None:
                    # Before the confirmation, which rereads the user if a
                    # change of access went by meanwhile (the connection is
                    # not registered yet: rechecks do not see it).
                    await self._subscribe(connection, principal, deadline)
                    held = principal
                principal, read = await self.rechecks.confirm(principal, since, read)
                while held is not None and principal != held:
                    # Reloaded: its partitions, then confirmed again, since
                    # access may have changed while they were subscribed to.
                    assert self.subscriptions is not None
                    self.subscriptions.release(held)
                    held = None
                    if principal is None:
                        break
                    await self._subscribe(connection, principal, deadline)
                    held = principal
                    principal, read = await self.rechecks.confirm(
                        principal, since, read
                    )
        except SubscriptionsUnavailable:
            self._release(held)
            self.refuse(connection, "unavailable", TRY_AGAIN_LATER)
            return None
        except (DatabaseUnavailable, TimeoutError) as exc:
            self._release(held)
            logger.warning(
                "Database unavailable, connection %s told to retry: %s",
                connection.id,
                reason(exc),
            )
            self.refuse(connection, "unavailable", TRY_AGAIN_LATER)
            return None
        except BaseException as exc:
            self._release(held)
            if not isinstance(exc, Exception):
                raise
            logger.exception("Authentication crashed for connection %s", connection.id)
            self.refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        if principal is None:
            # Why, never the token: the Authenticator's reasons hold none.
            logger.info(
                "Authentication failed for connection %s: %s",
                connection.id,
                why
                or "access changed during authentication (deactivated, or "
                "the password changed)",
            )
            self.refuse(connection, "failure", AUTHENTICATION_FAILED)
            return None
        return principal, hello.last_event_id, read

    def _release(self, held: Principal | None) -> None:
        if held is not None and self.subscriptions is not None:
            self.subscriptions.release(held)

    async def _subscribe(
        self, connection: SidecarConnection, principal: Principal, deadline: float
    ) -> None:
        """Wait until the Redis Cluster partitions the user follows are
        subscribed to, and hold them until :meth:`Subscriptions.release`;
        raise SubscriptionsUnavailable if they are not in time."""
        assert self.subscriptions is not None
        try:
            async with asyncio.timeout_at(deadline - 0.01):
                await self.subscriptions.wait(principal)
        except TimeoutError:
            logger.warning(
                "Connection %s told to retry: its Redis Cluster partitions "
                "are not subscribed to (Redis unreachable?)",
                connection.id,
            )
            raise SubscriptionsUnavailable from None

    def refuse(
        self, connection: SidecarConnection, result: str, close: tuple[int, str]
    ) -> None:
        """Count a refused authentication by its result and close."""
        self.counters.authentications[result] += 1
        connection.close_soon(*close)


def _why(result: object) -> str:
    """Why an authentication result refuses its token; "" for a principal.

    A refusal is None or a wsserver.auth.Refused (not imported here: it
    needs Django's app registry), which says why.
    """
    if result is None:
        return "refused"
    if isinstance(result, Principal):
        return ""
    return str(getattr(result, "reason", "")) or "refused"
