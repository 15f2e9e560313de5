"""Configuration from the environment: defaults, validation, masking."""

import pytest

from wsserver.config import SETTINGS, ConfigError, load_config
from wsserver.djangosettings import django_settings, read_only_database
from wsserver.logs import mask_url

BASE = {"SECRET_KEY": "s3cret"}


def test_defaults():
    config = load_config(BASE)
    assert config.host == "localhost"
    assert config.port == 8888
    assert config.redis_url == "redis://127.0.0.1:6379/1"
    assert config.channel == "events"
    assert config.sesame_scope == "wsserver"
    assert config.sesame["SESAME_MAX_AGE"] == 30
    assert config.sesame["SESAME_ONE_TIME"] is False
    assert config.database["ENGINE"] == "django.db.backends.sqlite3"
    assert config.compression is None
    assert not config.user_model.custom


def test_every_problem_is_reported_with_its_variable():
    with pytest.raises(ConfigError) as exc_info:
        load_config(
            {
                "WS_PORT": "99999",
                "SESAME_MAX_AGE": "soon",
                "REDIS_URL": "http://localhost",
                "WS_USER_PK": "string",
                "SESAME_INVALIDATE_ON_EMAIL_CHANGE": "maybe",
            }
        )
    problems = "\n".join(exc_info.value.problems)
    for name in [
        "SECRET_KEY",
        "WS_PORT",
        "SESAME_MAX_AGE",
        "REDIS_URL",
        "WS_USER_PK",
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE",
    ]:
        assert f"{name}: " in problems
    assert len(exc_info.value.problems) == 6


def test_one_time_tokens_are_refused_with_a_reason():
    with pytest.raises(ConfigError, match=r"SESAME_ONE_TIME: .*last_login"):
        load_config({**BASE, "SESAME_ONE_TIME": "true"})
    config = load_config({**BASE, "SESAME_ONE_TIME": "false"})
    assert config.sesame["SESAME_ONE_TIME"] is False


def test_insecure_sesame_combination_is_refused():
    with pytest.raises(ConfigError, match="SESAME_MAX_AGE"):
        load_config(
            {
                **BASE,
                "SESAME_MAX_AGE": "none",
                "SESAME_INVALIDATE_ON_PASSWORD_CHANGE": "false",
            }
        )


def test_in_memory_sqlite_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_config({**BASE, "DATABASE_URL": "sqlite://:memory:"})


def test_summary_masks_secrets():
    config = load_config(
        {
            **BASE,
            "DATABASE_URL": "postgres://app:hunter2@db/site",
            "REDIS_URL": "redis://:redispass@cache:6379/0",
            "SESAME_KEY": "sesamekey",
        }
    )
    summary = config.summary()
    text = repr(summary) + repr(config)
    for secret in ["s3cret", "hunter2", "redispass", "sesamekey"]:
        assert secret not in text
    assert summary["DATABASE_URL"] == "postgres://app:***@db/site"
    assert set(summary) == {setting.name for setting in SETTINGS}


def test_mask_url():
    assert mask_url("redis://localhost/1") == "redis://localhost/1"
    assert mask_url("redis://u:p@h:1/2") == "redis://u:***@h:1/2"


def test_custom_user_model():
    config = load_config(
        {
            **BASE,
            "WS_USER_TABLE": "accounts_user",
            "WS_USER_PK": "uuid",
            "WS_USERNAME_FIELD": "email",
        }
    )
    assert config.user_model.custom
    assert django_settings(config)["AUTH_USER_MODEL"] == "accounts.User"
    assert "authproject.accounts" in django_settings(config)["INSTALLED_APPS"]
    with pytest.raises(ConfigError, match="WS_USER_TABLE"):
        load_config({**BASE, "WS_USER_TABLE": "users; drop table x"})


def test_database_is_opened_read_only():
    postgres = read_only_database(
        load_config({**BASE, "DATABASE_URL": "postgres://u:p@h/db"})
    )
    assert "default_transaction_read_only=on" in postgres["OPTIONS"]["options"]
    assert postgres["CONN_HEALTH_CHECKS"] is True
    assert postgres["CONN_MAX_AGE"] == 600
    pooled = read_only_database(
        load_config({**BASE, "DATABASE_URL": "postgres://u:p@h/db?pool=true"})
    )
    assert pooled["CONN_MAX_AGE"] == 0
    sqlite = read_only_database(
        load_config({**BASE, "DATABASE_URL": "sqlite:////tmp/site.db"})
    )
    assert sqlite["NAME"] == "file:/tmp/site.db?mode=ro"
    assert sqlite["OPTIONS"]["uri"] is True


def test_sesame_settings_reach_django():
    settings = django_settings(
        load_config({**BASE, "SESAME_MAX_AGE": "none", "SESAME_SIGNATURE_SIZE": "12"})
    )
    assert settings["SESAME_MAX_AGE"] is None
    assert settings["SESAME_SIGNATURE_SIZE"] == 12
    assert settings["SECRET_KEY"] == "s3cret"
    assert settings["AUTHENTICATION_BACKENDS"] == ["sesame.backends.ModelBackend"]
