"""Which database errors are outages (1013, retry later) and which are not."""

from __future__ import annotations

from django.db.utils import OperationalError, ProgrammingError

from wsserver.database import unavailable


def test_a_lost_connection_is_an_outage():
    assert unavailable(OperationalError(2013, "Lost connection to server"))


def test_a_missing_grant_is_not_an_outage():
    # mysqlclient's error for a table the role may not read: clients must
    # not be told to retry forever; the error propagates (1011, logged).
    assert not unavailable(OperationalError(1142, "SELECT command denied to 'ro'"))
    assert not unavailable(ProgrammingError("permission denied for table x"))
