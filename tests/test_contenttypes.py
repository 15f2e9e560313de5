"""ContentTypeCache on a real database: how often it reads the table.

In a child process set up as the sidecar (authdb.py), on a SQLite database
of the example site, to which a content type is added in between (by a
connection of the test's own: the sidecar's is read-only).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_the_table_is_read_once_then_again_only_on_a_late_miss(databases):
    result = databases.new("sqlite").sidecar(sidecar_lookups).value
    article, added = result.pop("article_id"), result.pop("added_id")
    assert result == {
        # The first lookup reads the table; hits and early misses do not.
        "first": {"id": article, "queries": 1},
        "hit": {"id": article, "queries": 0},
        "early miss": {"id": None, "queries": 0},
        # A miss after RELOAD_INTERVAL reads the table again: new rows appear.
        "late miss": {"id": added, "queries": 1},
        "late hit": {"id": article, "queries": 0},
    }


def sidecar_lookups() -> dict:
    import os
    import sqlite3
    import time
    from unittest import mock

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from wsserver.contenttypes import ContentTypeCache

    cache = ContentTypeCache()

    def get(model: str) -> dict:
        with CaptureQueriesContext(connection) as queries:
            found = cache.get("catalog", model)
        return {"id": found, "queries": len(queries)}

    result = {"first": get("article"), "hit": get("article")}
    path = os.environ["DATABASE_URL"].removeprefix("sqlite://")
    with sqlite3.connect(path) as writer:
        added = writer.execute(
            "INSERT INTO django_content_type (app_label, model) "
            "VALUES ('catalog', 'added')"
        ).lastrowid
    writer.close()
    result["early miss"] = get("added")
    later = time.monotonic() + cache.RELOAD_INTERVAL + 1
    with mock.patch("time.monotonic", return_value=later):
        result["late miss"] = get("added")
        result["late hit"] = get("article")
    article = connection.cursor().execute(
        "SELECT id FROM django_content_type WHERE model = 'article'"
    )
    return {**result, "article_id": article.fetchone()[0], "added_id": added}
