from datetime import timedelta
from pathlib import Path

import pytest

from streamstats.errors import SettingsError
from streamstats.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    import os

    monkeypatch.chdir(tmp_path)  # no .env file from the checkout

    for name in list(os.environ):
        if name.startswith("STREAMSTATS_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


def test_defaults_match_the_design():
    s = load_settings()
    assert s.database_url == "postgresql:///streamstats"
    assert s.redis_url is None
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert (s.batch_ms, s.batch_rows, s.queue_rows) == (50, 1000, 100_000)
    assert s.write_timeout == timedelta(seconds=10)
    assert s.raw_retention == timedelta(days=30)
    assert s.rollup_interval == timedelta(seconds=30)
    assert s.reports_dir == Path("reports")
    assert s.log_format == "text"


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/stats")
    monkeypatch.setenv("STREAMSTATS_BATCH_MS", "20")
    monkeypatch.setenv("STREAMSTATS_RAW_RETENTION", "7d")
    monkeypatch.setenv("STREAMSTATS_WRITE_TIMEOUT", "2.5")
    monkeypatch.setenv("STREAMSTATS_CORS_ORIGINS", "https://a.example, https://b.example")
    s = load_settings()
    assert s.database_url == "postgresql://db.example/stats"
    assert s.batch_ms == 20
    assert s.raw_retention == timedelta(days=7)
    assert s.write_timeout == timedelta(seconds=2.5)
    assert s.cors_allowed == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMSTATS_BATCH_MS", "fast"),
        ("STREAMSTATS_PORT", "70000"),
        ("STREAMSTATS_LOG_FORMAT", "xml"),
        ("STREAMSTATS_RAW_RETENTION", "forever"),
        ("STREAMSTATS_QUEUE_ROWS", "0"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("STREAMSTATS_WEBHOOK_URLS", "hooks.example/a"),
        ("STREAMSTATS_WEBHOOK_URLS", "ftp://hooks.example/a"),
        ("STREAMSTATS_WEBHOOK_URLS", "https://"),
        ("STREAMSTATS_WEBHOOK_URLS", "https://a.example/x,https://a.example/x"),
        ("STREAMSTATS_WEBHOOK_SECRET", "too-short-" + "s" * 21),
        ("STREAMSTATS_WEBHOOK_TIMEOUT", "0"),
        ("STREAMSTATS_WEBHOOK_RETRY_FOR", "a day"),
        ("STREAMSTATS_WEBHOOK_FORMAT", "teams"),
        ("STREAMSTATS_PING_INTERVAL", "1500ms"),
        ("STREAMSTATS_PING_TIMEOUT", "500ms"),
    ],
)
def test_a_malformed_value_is_one_line_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message
    assert caught.value.__cause__ is None  # no chained pydantic traceback


def test_a_dotenv_file_is_read_and_the_environment_wins(monkeypatch, tmp_path):
    secret = "from-file-" + "f" * 32
    (tmp_path / ".env").write_text(f"STREAMSTATS_JWT_SECRET={secret}\nSTREAMSTATS_PORT=9000\n")
    monkeypatch.setenv("STREAMSTATS_PORT", "9100")
    s = load_settings()
    assert s.require_jwt_secret() == secret
    assert s.port == 9100


def test_a_missing_jwt_secret_is_reported_when_it_is_needed():
    with pytest.raises(SettingsError, match="STREAMSTATS_JWT_SECRET"):
        load_settings().require_jwt_secret()


@pytest.mark.parametrize("secret", ["short", "x" * 31, "é" * 15])
def test_a_jwt_secret_under_32_bytes_is_refused_in_one_line(monkeypatch, secret):
    monkeypatch.setenv("STREAMSTATS_JWT_SECRET", secret)
    with pytest.raises(SettingsError) as caught:
        load_settings().require_jwt_secret()
    message = str(caught.value)
    assert "STREAMSTATS_JWT_SECRET" in message and "32" in message
    assert "\n" not in message
    assert secret not in message  # the secret itself is never printed


def test_a_jwt_secret_of_32_bytes_is_accepted(monkeypatch):
    monkeypatch.setenv("STREAMSTATS_JWT_SECRET", "é" * 16)  # 16 characters, 32 bytes
    assert load_settings().require_jwt_secret() == "é" * 16


def test_cli_prints_a_settings_error_without_a_traceback(monkeypatch, capsys):
    from streamstats.cli import main

    monkeypatch.setenv("STREAMSTATS_BATCH_ROWS", "lots")
    with pytest.raises(SystemExit) as exited:
        main(["migrate"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("streamstats: error: ") and "STREAMSTATS_BATCH_ROWS" in err
    assert "Traceback" not in err


def test_webhook_settings_are_read(monkeypatch):
    monkeypatch.setenv(
        "STREAMSTATS_WEBHOOK_URLS", "https://hooks.example/a, http://10.0.0.5:8080/b"
    )
    monkeypatch.setenv("STREAMSTATS_WEBHOOK_SECRET", "s" * 32)
    monkeypatch.setenv("STREAMSTATS_WEBHOOK_RETRY_FOR", "2h")
    monkeypatch.setenv("STREAMSTATS_WEBHOOK_FORMAT", "slack")
    s = load_settings()
    assert s.webhook_urls == ["https://hooks.example/a", "http://10.0.0.5:8080/b"]
    assert s.require_webhook_secret() == b"s" * 32
    assert s.webhook_retry_for == timedelta(hours=2)
    assert s.webhook_timeout == timedelta(seconds=10)
    assert s.webhook_format == "slack"
    assert load_settings(webhook_urls="").webhook_urls == []
    assert load_settings(webhook_secret="").webhook_secret is None


def test_a_short_webhook_secret_is_refused_without_echoing_it(monkeypatch):
    secret = "too-short-" + "s" * 21
    monkeypatch.setenv("STREAMSTATS_WEBHOOK_SECRET", secret)
    with pytest.raises(SettingsError, match="STREAMSTATS_WEBHOOK_SECRET") as caught:
        load_settings()
    assert secret not in str(caught.value) and "32" in str(caught.value)


def test_webhook_urls_without_a_secret_are_refused_when_delivering(monkeypatch):
    monkeypatch.setenv("STREAMSTATS_WEBHOOK_URLS", "https://hooks.example/a")
    with pytest.raises(SettingsError, match="STREAMSTATS_WEBHOOK_SECRET is not set"):
        load_settings().require_webhook_secret()
