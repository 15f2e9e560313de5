"""Rechecks: reload users' access when it may have changed, and revoke.

The main site says whose access changed (control messages, see
:mod:`wsserver.control`); periodic rechecks (``WS_RECHECK_INTERVAL``) and
resubscriptions to Redis catch what no message said or what was lost. A
recheck reads the users' principals again, in one query per
``RECHECK_BATCH`` users, and for each connection of theirs:

- keeps it, with the permissions just read, while the credentials its token
  proved are unchanged;
- closes it with 1008 ``access revoked`` when the user is gone, inactive, or
  their credentials changed (a new password, say);
- closes it with 1013 ``try again later`` when the recheck fails or takes
  more than ``RECHECK_TIMEOUT``: access may have been revoked and cannot be
  checked, so nothing is trusted on doubt. After such an outage, rechecks
  fail at once for ``RECHECK_TIMEOUT`` rather than each waiting for it.

Reads are numbered as they start, and a read never replaces what a later one
applied; users whose access changed while a read ran are read again.
Authentications that overlapped a change are confirmed the same way
(:meth:`Rechecks.confirm`) before their connection is registered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from .access import AccessChanges, affected_users
from .closes import ACCESS_REVOKED, TRY_AGAIN_LATER
from .control import GroupChanged, InvalidControl, parse_control
from .database import DatabaseUnavailable

if TYPE_CHECKING:
    from .auth import Authenticator
    from .counters import Counters
    from .database import Database
    from .delivery import Delivery
    from .routing import Principal

__all__ = ["RECHECK_BATCH", "RECHECK_TIMEOUT", "Rechecks", "is_outage", "reason"]

logger = logging.getLogger("wsserver.server")

# How long an access change may take to recheck before the users concerned
# are disconnected (to reconnect and authenticate again) rather than trusted.
RECHECK_TIMEOUT = 5.0
# Users rechecked with one query.
RECHECK_BATCH = 500


class Rechecks:
    """Keep every registered connection's access as the database has it."""

    def __init__(
        self,
        delivery: Delivery[Any],
        database: Database,
        authenticator: Authenticator,
        counters: Counters,
        *,
        disconnect: Callable[[Any, tuple[int, str]], None],
        interval: float | None = None,
    ) -> None:
        self.router = delivery.router
        self.database = database
        self.authenticator = authenticator
        self.counters = counters
        # Unregisters a connection and closes it (without waiting).
        self.disconnect = disconnect
        self.interval = interval
        self.changes = AccessChanges()
        self._reads = 0
        # Remembered only while a recheck's read is under way: only then can
        # an older read come after a newer one.
        self._reading: set[int] = set()
        self._applied: dict[str, int] = {}
        self._outage = float("-inf")

    # What asks for rechecks

    def on_control_message(self, payload: bytes) -> Awaitable[None] | None:
        """Recheck the connected users whose access changed.

        Returns an awaitable when there is work to do: the subscriber waits
        for it before the next event, so new permissions apply to that event.
        """
        try:
            change = parse_control(payload)
        except InvalidControl as exc:
            self.counters.bus_events["invalid"] += 1
            logger.warning("Skipped a control message: %s: %.100r", exc, payload)
            return None
        self.changes.note(change)
        users = affected_users(change, self.router.users(), self.router.principals())
        if not users:
            return None
        if isinstance(change, GroupChanged):
            why = f"a change of group {change.group_id}"
        else:
            why = f"a change of user(s) {', '.join(sorted(users)[:10])}"
        return self.recheck(users, why)

    def on_resubscribed(self) -> Awaitable[None]:
        """Control messages may have been lost while Redis was away: recheck
        everyone before the next event (the subscriber waits for it), and
        confirm authentications that were in flight."""
        self.changes.note_everyone()
        return self.recheck_everyone("resubscribing to Redis")

    async def run_periodically(self) -> None:
        """Recheck everyone every ``interval`` seconds (give or take 10%)."""
        assert self.interval is not None
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.9, 1.1))
            await self.recheck_everyone("the periodic recheck")

    # Rechecks

    async def recheck_everyone(self, why: str) -> None:
        """Recheck every connected user, a batch of users per query."""
        users = sorted(self.router.users(), key=str)
        for start in range(0, len(users), RECHECK_BATCH):
            await self.recheck(set(users[start : start + RECHECK_BATCH]), why)

    async def recheck(self, user_ids: set[str], why: str) -> None:
        """Reload these users' access and apply it; disconnect, with 1013,
        those it could not confirm within RECHECK_TIMEOUT."""
        pending = set(user_ids)
        loop = asyncio.get_running_loop()
        try:
            if loop.time() - self._outage < RECHECK_TIMEOUT:
                raise DatabaseUnavailable("it did not answer the last recheck")
            async with asyncio.timeout(RECHECK_TIMEOUT):
                while pending:
                    since, read = self.start_read()
                    self._reading.add(read)
                    try:
                        principals = await self.database.run(
                            self.authenticator.reauthenticate, sorted(pending)
                        )
                    finally:
                        self._reading.discard(read)
                    # Users whose access changed while this read ran may have
                    # been read before the change: read them again.
                    stale = {u for u in pending if self.changes.changed_since(u, since)}
                    for user_id in pending - stale:
                        self._apply(user_id, principals.get(user_id), read)
                    if not self._reading:
                        self._applied.clear()
                    pending = stale
        except Exception as exc:
            if is_outage(exc):
                self._outage = loop.time()
            (logger.warning if is_outage(exc) else logger.exception)(
                "Cannot recheck %d user(s) after %s (%s): disconnecting them with 1013",
                len(pending),
                why,
                reason(exc),
            )
            for user_id in pending:
                for connection in self.router.connections_of(user_id):
                    self.disconnect(connection, TRY_AGAIN_LATER)

    def _apply(self, user_id: str, principal: Principal | None, read: int) -> None:
        """Apply a read of a user's access, unless a later read was applied."""
        if read < self._applied.get(user_id, 0):
            return
        if self._reading:
            self._applied[user_id] = read
        for connection in self.router.connections_of(user_id):
            previous = self.router.principal(connection)
            if principal is None or previous.credentials != principal.credentials:
                logger.info(
                    "Connection %s: access revoked for user %s",
                    getattr(connection, "id", connection),
                    user_id,
                )
                self.counters.revocations += 1
                self.disconnect(connection, ACCESS_REVOKED)
            else:
                self.router.update(connection, principal)

    # Authentications

    def start_read(self) -> tuple[int, int]:
        """Number a read of users' access about to start: the changes seen so
        far, and the read's number."""
        self._reads += 1
        return self.changes.count, self._reads

    async def confirm(
        self, principal: Principal | None, since: int, read: int
    ) -> tuple[Principal | None, int]:
        """An authentication's principal, read again while a change of its
        user overlapped the read (the query may have read rows the change then
        replaced); None if its token's credentials died meanwhile. Returns it
        with the number of the read it comes from."""
        while principal is not None and self.changes.changed_since(
            principal.user_id, since
        ):
            since, read = self.start_read()
            confirmed = await self.database.run(
                self.authenticator.reauthenticate, [principal.user_id]
            )
            reloaded = confirmed.get(principal.user_id)
            if reloaded is None or reloaded.credentials != principal.credentials:
                return None, read
            principal = reloaded
        return principal, read

    def registered(self, user_id: Hashable, read: int) -> None:
        """A connection was registered with a read of its user's access: a
        recheck that read before it must not undo it."""
        if self._reading:
            key = str(user_id)
            self._applied[key] = max(self._applied.get(key, 0), read)


def reason(exc: BaseException) -> str:
    """What went wrong, never empty (a TimeoutError has no message)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc).strip() or type(exc).__name__


def is_outage(exc: BaseException) -> bool:
    """Whether an error means the database is out of reach (not a bug)."""
    return isinstance(exc, DatabaseUnavailable | TimeoutError)
