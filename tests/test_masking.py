"""Secrets in URLs are hidden wherever a URL is logged or printed (mask_url)."""

from __future__ import annotations

import pytest

from wsserver.config import ConfigError, load_config
from wsserver.logs import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # Nothing secret: unchanged.
        ("redis://localhost/1", "redis://localhost/1"),
        ("redis://127.0.0.1:6379/0?db=1&client_name=ws", None),
        ("sqlite:////srv/site/db.sqlite3", None),
        ("sqlite:////srv/a@b/db.sqlite3", None),
        ("postgresql://site@db/site?sslmode=require", None),
        # The password.
        ("redis://u:p@h:1/2", "redis://u:***@h:1/2"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgres://app:p%40ss@db/site", "postgres://app:***@db/site"),
        ("unix://:hunter2@/run/redis.sock", "unix://:***@/run/redis.sock"),
        # Secret query parameters; the others stay readable.
        ("redis://cache:6379/0?password=hunter2", "redis://cache:6379/0?password=***"),
        (
            "redis://cache/0?db=1&PassWord=hunter2&client_name=ws",
            "redis://cache/0?db=1&PassWord=***&client_name=ws",
        ),
        (
            "unix:///run/redis.sock?db=0&password=hunter2",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        (
            "postgresql://site@db/site?sslmode=require&sslpassword=hunter2",
            "postgresql://site@db/site?sslmode=require&sslpassword=***",
        ),
        (
            "rediss://cache/0?passwd=a&pwd=b&secret=c&token=d&api_key=e&auth=f",
            "rediss://cache/0?passwd=***&pwd=***&secret=***&token=***&api_key=***"
            "&auth=***",
        ),
        ("redis://u:p@h/0?password=q#f", "redis://u:***@h/0?password=***#f"),
        # A password with unescaped "/", "?", "#" or "@": everything up to the
        # last "@" goes.
        ("redis://:hunt/er2@cache:6379/0", "redis://***@cache:6379/0"),
        ("redis://:hunt?er2@cache:6379/0", "redis://***@cache:6379/0"),
        ("postgres://app:hunt#er2@db/site", "postgres://***@db/site"),
        ("redis://:hu@nt/er2@cache/0", "redis://***@cache/0"),
        ("redis://:hunt@er2@cache/0", "redis://:***@cache/0"),
        ("redis://[::1", "<unparsable URL>"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == (url if masked is None else masked)


def test_mask_url_with_another_mask():
    assert mask_url("redis://:hunter2@cache/0?password=hunter3", "********") == (
        "redis://:********@cache/0?password=********"
    )


def test_the_start_up_summary_hides_secret_query_parameters():
    config = load_config(
        {
            "SECRET_KEY": "s3cret",
            "REDIS_URL": "redis://cache:6379/0?password=hunter2",
            "DATABASE_URL": "postgres://app:hunter2@db/site?sslpassword=hunter3",
        }
    )
    summary = config.summary()
    assert summary["REDIS_URL"] == "redis://cache:6379/0?password=***"
    assert summary["DATABASE_URL"] == "postgres://app:***@db/site?sslpassword=***"
    shifted = load_config({"SECRET_KEY": "s", "REDIS_URL": "redis://:hunt/er2@c/0"})
    assert shifted.summary()["REDIS_URL"] == "redis://***@c/0"


def test_an_unparsable_database_url_does_not_show_its_password():
    with pytest.raises(ConfigError) as raised:
        load_config({"SECRET_KEY": "s", "DATABASE_URL": "postgres://u:hun/ter2@h:x/db"})
    assert "DATABASE_URL" in str(raised.value)
    assert "ter2" not in str(raised.value)
