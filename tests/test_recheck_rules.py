"""The server's recheck rules, in-process: which read of a user's access wins.

The database is a stand-in whose answers and timing the test controls (the
real one is in test_rechecks.py): these races need a read held at a given
moment, which a real database does not offer.
"""

from __future__ import annotations

import asyncio
import itertools

from waiting import eventually

from wsserver.control import GroupChanged
from wsserver.counters import Counters
from wsserver.database import DatabaseUnavailable
from wsserver.delivery import Delivery
from wsserver.rechecks import RECHECK_TIMEOUT, Rechecks
from wsserver.routing import Permissions, Principal, Router


class Database:
    """Runs the function when the test says so, on the rows it holds then."""

    def __init__(self) -> None:
        self.rows: dict[str, Principal | None] = {}
        self.gates: list[asyncio.Future[None]] = []
        self.reads = 0
        self.taken = 0
        self.down = False

    async def run(self, function, *args):
        self.reads += 1
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        if self.down:
            raise DatabaseUnavailable("connection refused")
        return function(*args)

    async def next_read(self) -> asyncio.Future[None]:
        """The next read that started (it waits to be let through)."""
        await eventually(
            lambda: len(self.gates) > self.taken, 2, "a read", in_thread=False
        )
        self.taken += 1
        return self.gates[self.taken - 1]


class Authenticator:
    def __init__(self, database: Database) -> None:
        self.database = database

    def authenticate_many(self, tokens):
        raise AssertionError("no authentication here")

    def reauthenticate(self, user_ids):
        return {user_id: self.database.rows.get(user_id) for user_id in user_ids}


class Connection:
    ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.closed: tuple[int, str] | None = None

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def principal(user_id: str, *content_types: int, groups=()) -> Principal:
    return Principal(
        user_id,
        user_id,
        Permissions(frozenset(content_types)),
        group_ids=frozenset(groups),
    )


def sidecar_with(*principals: Principal):
    """The rechecks of a sidecar with one connection per principal."""
    database = Database()
    delivery = Delivery(Router(), max_buffer=2**20)

    def disconnect(connection, close):
        delivery.unregister(connection)
        connection.close_soon(*close)

    sidecar = Rechecks(
        delivery, database, Authenticator(database), Counters(), disconnect=disconnect
    )
    connections = {}
    for p in principals:
        connection = Connection()
        delivery.register(connection, p)
        database.rows[p.user_id] = p
        connections[p.user_id] = connection
    return sidecar, database, connections


async def test_a_group_change_during_a_recheck_gets_everyone_read_again():
    sidecar, database, connections = sidecar_with(
        principal("1", 1, groups=[7]), principal("2", 1)
    )
    recheck = asyncio.create_task(sidecar.recheck({"1", "2"}, "the test"))
    first = await database.next_read()
    # User 2 lost access in a way no message tells (QuerySet.update()), and
    # meanwhile group 7 changed: its own recheck is for user 1 only.
    database.rows["2"] = None
    sidecar.changes.note(GroupChanged(7))
    first.set_result(None)
    (await database.next_read()).set_result(None)  # read again: stale
    await recheck
    assert connections["2"].closed == (1008, "access revoked")
    assert connections["1"].closed is None


async def test_an_older_read_never_replaces_a_newer_one():
    sidecar, database, connections = sidecar_with(principal("1", 1))
    older = asyncio.create_task(sidecar.recheck({"1"}, "a change"))
    older_read = await database.next_read()
    newer = asyncio.create_task(sidecar.recheck({"1"}, "the periodic recheck"))
    newer_read = await database.next_read()
    # The newer read sees content type 2 only; the older one had read 1.
    database.rows["1"] = principal("1", 2)
    newer_read.set_result(None)
    await newer
    assert sidecar.router.permissions(connections["1"]).content_type_ids == {2}
    database.rows["1"] = principal("1", 1)  # what the older read had seen
    older_read.set_result(None)
    await older
    assert sidecar.router.permissions(connections["1"]).content_type_ids == {2}


async def test_after_an_outage_rechecks_fail_at_once_and_close():
    sidecar, database, connections = sidecar_with(principal("1", 1), principal("2"))
    database.down = True
    recheck = asyncio.create_task(sidecar.recheck({"1"}, "a change"))
    (await database.next_read()).set_result(None)
    await recheck
    assert connections["1"].closed == (1013, "try again later")
    # The next one does not wait RECHECK_TIMEOUT for the same answer.
    reads = database.reads
    async with asyncio.timeout(RECHECK_TIMEOUT / 10):
        await sidecar.recheck({"2"}, "a change")
    assert database.reads == reads
    assert connections["2"].closed == (1013, "try again later")


async def test_a_recheck_that_times_out_closes_whom_it_could_not_confirm(
    monkeypatch,
):
    monkeypatch.setattr("wsserver.rechecks.RECHECK_TIMEOUT", 0.1)
    sidecar, _, connections = sidecar_with(principal("1", 1), principal("2"))
    await sidecar.recheck({"1", "2"}, "a change")  # its read is never let through
    assert (
        connections["1"].closed == connections["2"].closed == (1013, "try again later")
    )
    assert "1" not in sidecar.router.users()
