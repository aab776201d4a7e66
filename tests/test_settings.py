"""Settings: defaults, env file, environment over file, rejected values, hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from jobs.settings import QUEUES, Settings, SettingsError


def test_defaults_are_embedded_development_mode() -> None:
    s = Settings.from_mapping({})
    assert s.app_env == "development"
    assert s.real_mode is False
    assert s.log_format == "text"
    assert s.redis_connection_url() == "redis://127.0.0.1:6379/0"
    assert [s.queue_policy(q).concurrency for q in QUEUES] == [5, 3, 2, 1]
    assert {s.queue_policy(q).max_attempts for q in QUEUES} == {3}
    assert s.queue_policy("email").backoff_min_ms == 2000
    assert s.queue_policy("cleanup").time_limit_ms == 1_800_000


@pytest.mark.parametrize(
    ("env", "real"),
    [
        ({"ENABLE_BACKGROUND_JOBS": "true"}, True),
        ({"ENABLE_BACKGROUND_JOBS": "1"}, True),
        ({"ENABLE_BACKGROUND_JOBS": "false"}, False),
        ({"APP_ENV": "staging"}, False),
        ({"APP_ENV": "production", "SMTP_HOST": "smtp.example.com", "MONGO_URL": "mongodb://db"}, True),
    ],
)
def test_mode_follows_design(env: dict[str, str], real: bool) -> None:
    assert Settings.from_mapping(env).real_mode is real


def test_production_defaults_to_json_logs() -> None:
    s = Settings.from_mapping({"APP_ENV": "production", "SMTP_HOST": "smtp", "MONGO_URL": "mongodb://db"})
    assert s.log_format == "json"
    assert Settings.from_mapping({"LOG_FORMAT": "json"}).log_format == "json"


def test_env_file_is_loaded_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "environment.env"
    env_file.write_text("REDIS_HOST=redis.internal\nREDIS_PORT=6380\nEMAIL_CONCURRENCY=9\n# comment\n")
    s = Settings.load(environ={"REDIS_PORT": "7000"}, env_file=env_file)
    assert s.redis_host == "redis.internal"  # from the file
    assert s.redis_port == 7000  # the environment overrides the file
    assert s.queue_policy("email").concurrency == 9


def test_env_file_named_by_env_file_variable(tmp_path: Path) -> None:
    env_file = tmp_path / "other.env"
    env_file.write_text("MONGO_DB=from_other_file\n")
    assert Settings.load(environ={"ENV_FILE": str(env_file)}).mongo_db == "from_other_file"


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert Settings.load(environ={}, env_file=tmp_path / "absent.env").redis_port == 6379


def test_blank_value_means_default() -> None:
    assert Settings.from_mapping({"REDIS_PORT": "", "SMTP_HOST": ""}).redis_port == 6379


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_PORT", "abc", "REDIS_PORT='abc'"),
        ("REDIS_PORT", "70000", "less than or equal to 65535"),
        ("REDIS_DB", "-1", "REDIS_DB='-1'"),
        ("REDIS_URL", "http://x", "redis://"),
        ("REDIS_NAMESPACE", "has space", "REDIS_NAMESPACE"),
        ("MONGO_URL", "postgres://x", "mongodb://"),
        ("MONGO_DB", "a/b", "MONGO_DB"),
        ("APP_ENV", "prod", "'development', 'test', 'staging' or 'production'"),
        ("ENABLE_BACKGROUND_JOBS", "maybe", "ENABLE_BACKGROUND_JOBS"),
        ("SMTP_SECURITY", "tls", "'starttls', 'ssl' or 'none'"),
        ("SMTP_PORT", "0", "SMTP_PORT"),
        ("SMTP_TIMEOUT_S", "-1", "SMTP_TIMEOUT_S"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("LOG_FORMAT", "xml", "'json' or 'text'"),
        ("EMAIL_CONCURRENCY", "0", "EMAIL_CONCURRENCY"),
        ("IMAGE_CONCURRENCY", "two", "IMAGE_CONCURRENCY"),
        ("ANALYTICS_MAX_ATTEMPTS", "0", "ANALYTICS_MAX_ATTEMPTS"),
        ("CLEANUP_TIME_LIMIT_S", "0", "CLEANUP_TIME_LIMIT_S"),
        ("EMAIL_BACKOFF_MIN_MS", "x", "EMAIL_BACKOFF_MIN_MS"),
        ("JOBS_BACKOFF_JITTER", "2", "JOBS_BACKOFF_JITTER"),
        ("JOBS_BACKOFF_MIN_MS", "999999999", "must not exceed JOBS_BACKOFF_MAX_MS"),
        ("EMBEDDED_WORKER_THREADS", "0", "EMBEDDED_WORKER_THREADS"),
        ("CLEANUP_MIN_OLDER_THAN_DAYS", "0", "CLEANUP_MIN_OLDER_THAN_DAYS"),
        ("REDIS_SOCKET_TIMEOUT_S", "0", "REDIS_SOCKET_TIMEOUT_S"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({name: value})
    assert expected in str(info.value)
    assert name in str(info.value) or "JOBS_BACKOFF" in str(info.value)


def test_production_requires_smtp_and_mongo() -> None:
    with pytest.raises(SettingsError, match="SMTP_HOST is required"):
        Settings.from_mapping({"APP_ENV": "production", "MONGO_URL": "mongodb://db"})
    with pytest.raises(SettingsError, match="MONGO_URL is required"):
        Settings.from_mapping({"APP_ENV": "production", "SMTP_HOST": "smtp"})


def test_every_env_example_variable_is_a_setting_and_vice_versa() -> None:
    example = Path(__file__).resolve().parents[1] / "environment.env.example"
    names = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text().splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].strip().isupper()
    }
    assert names == Settings.env_names()
    # ...and the example itself is a valid configuration.
    Settings.load(environ={}, env_file=example)


SECRET = "pw-Zq8!canary-5150"
FERNET_KEY = Fernet.generate_key().decode()


def test_encryption_keys_must_be_fernet_keys_and_are_not_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({"JOBS_ENCRYPTION_OLD_KEYS": f"{FERNET_KEY},{SECRET}"})
    assert "JOBS_ENCRYPTION_OLD_KEYS" in str(info.value) and "Fernet" in str(info.value)
    assert SECRET not in str(info.value) and FERNET_KEY not in str(info.value)


def test_passwords_never_in_repr_or_errors() -> None:
    s = Settings.from_mapping(
        {
            "REDIS_PASSWORD": SECRET,
            "SMTP_PASSWORD": SECRET,
            "MONGO_URL": f"mongodb://app:{SECRET}@db/taatom",
            "SENTRY_DSN": f"https://{SECRET}@sentry.example/1",
            "JOBS_ENCRYPTION_KEY": FERNET_KEY,
        }
    )
    assert FERNET_KEY not in repr(s)
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in repr(s.model_dump())
    # the password is usable where it is needed
    assert s.redis_connection_url().startswith("redis://:pw-Zq8%21canary-5150@")
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping(
            {"REDIS_URL": f"http://user:{SECRET}@host", "SMTP_PASSWORD": SECRET, "REDIS_PORT": "x"}
        )
    assert SECRET not in str(info.value)
    assert "REDIS_URL" in str(info.value)


def test_settings_are_immutable() -> None:
    s = Settings.from_mapping({})
    with pytest.raises(Exception):
        s.redis_port = 1  # type: ignore[misc]
