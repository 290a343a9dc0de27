"""The one typed settings object; nothing else in the project reads the environment."""

from __future__ import annotations

import re
import urllib.parse
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamstats.errors import SettingsError

PREFIX = "STREAMSTATS_"
# HS256 wants a key at least as long as its 256-bit hash (RFC 7518 section 3.2).
MIN_JWT_SECRET_BYTES = 32
# The HMAC-SHA256 key of webhook signatures: as long as the hash, for the same reason.
MIN_WEBHOOK_SECRET_BYTES = 32
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept `30d`, `12h`, `90m`, `45s`, `250ms` or plain seconds besides ISO 8601 (`P30D`)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            return timedelta(seconds=float(number) * _UNITS[(unit or "s").lower()])
    return value


Duration = Annotated[timedelta, Field(gt=timedelta(0))]


def _whole_seconds(value: timedelta) -> timedelta:
    if value.microseconds:
        raise ValueError("must be whole seconds (Engine.IO announces it in seconds)")
    return value


# At least a second, in whole seconds.
WholeSeconds = Annotated[timedelta, Field(ge=timedelta(seconds=1)), AfterValidator(_whole_seconds)]

# Engine.IO's keepalive. Pings are what idle connections cost (a task, a timer and two frames per
# socket per interval: 10,000 connections took ~10 % of a core at 25 s, ~4.4 % at 60 s; bench/
# RESULTS.md): 50 s instead of the JavaScript server's 25 s, still under the 60 s idle timeout of
# common proxies and load balancers. A silently vanished peer is noticed after 70 s instead of
# 45 s; a closed or crashed one at once, from its TCP connection.
PING_INTERVAL = timedelta(seconds=50)
PING_TIMEOUT = timedelta(seconds=20)


class Settings(BaseSettings):
    """Configuration from the environment (README, "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        case_sensitive=False,
        extra="ignore",
        # scripts/setup.sh keeps a generated JWT secret there; real environment variables win.
        env_file=".env",
        frozen=True,
        populate_by_name=True,
    )

    database_url: str = Field(
        "postgresql:///streamstats", validation_alias=AliasChoices("DATABASE_URL")
    )
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL"))
    # How long a silent node's viewers keep counting (it heartbeats every third of this).
    presence_ttl: Duration = timedelta(seconds=15)
    jwt_secret: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = ["*"]
    # An Engine.IO connection that joined no namespace this long is closed (JS `connectTimeout`).
    connect_timeout: Duration = timedelta(seconds=45)
    # Engine.IO keepalive: a ping this often; a connection that has not answered one within the
    # timeout is closed (and a client hears nothing for interval + timeout before giving up).
    # Whole seconds: python-engineio announces the interval to clients truncated to seconds.
    ping_interval: WholeSeconds = PING_INTERVAL
    ping_timeout: WholeSeconds = PING_TIMEOUT
    # How far ahead of ours a token issuer's clock may be (`iat`/`nbf` in the future).
    token_clock_skew: Annotated[timedelta, Field(ge=timedelta(0))] = timedelta(seconds=30)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Write path.
    batch_ms: int = Field(50, ge=1, le=60_000)
    batch_rows: int = Field(1000, ge=1, le=100_000)
    queue_rows: int = Field(100_000, ge=1)
    rate_limit: float = Field(50, gt=0)
    write_timeout: Duration = timedelta(seconds=10)
    max_event_bytes: int = Field(16 * 1024, ge=256)
    pool_size: int = Field(4, ge=2, le=100)

    # Jobs and storage.
    raw_retention: Duration = timedelta(days=30)
    rollup_1m_retention: Duration = timedelta(days=90)
    rollup_interval: Duration = timedelta(seconds=30)
    drops_interval: Duration = timedelta(seconds=15)
    reports_dir: Path = Path("reports")
    # Where readers of the reports reach the live dashboard (its stream pages are linked).
    dashboard_url: str = "http://127.0.0.1:8000/dashboard/"

    # Threshold alerts at ingest.
    alert_packet_loss_pct: float = Field(5.0, ge=0, le=100)
    alert_fps_min: float = Field(20.0, ge=0)
    alert_raise_after: int = Field(2, ge=1)
    alert_clear_after: int = Field(3, ge=1)

    # The rebuffering_high alert (the `rebuffering` job, over viewer beacons).
    alert_rebuffer_pct: float = Field(5.0, ge=0, le=100)
    alert_rebuffer_clear_pct: float = Field(2.5, ge=0, le=100)
    alert_rebuffer_min_views: int = Field(3, ge=1)
    alert_rebuffer_window: Duration = timedelta(minutes=2)
    rebuffering_interval: Duration = timedelta(seconds=15)

    # Bitrate-drop detection.
    drop_window: Duration = timedelta(seconds=30)
    drop_baseline_window: Duration = timedelta(minutes=5)
    drop_start_ratio: float = Field(0.5, gt=0, lt=1)
    drop_end_ratio: float = Field(0.8, gt=0, le=1)
    drop_min_baseline_kbps: float = Field(300.0, ge=0)
    drops_first_lookback: Duration = timedelta(hours=1)

    # Webhooks (jobs/webhooks.py): every alert transition POSTed to each URL, signed.
    webhook_urls: Annotated[list[str], NoDecode] = []
    webhook_secret: SecretStr | None = None
    webhook_timeout: Duration = timedelta(seconds=10)
    # Retries (exponential backoff from webhook_backoff, with jitter) go on this long, then dead.
    webhook_retry_for: Duration = timedelta(hours=24)
    webhook_backoff: Duration = timedelta(seconds=10)
    # `slack`: the payload also carries a `text` line, as Slack's incoming webhooks expect.
    webhook_format: Literal["standard", "slack"] = "standard"

    # Quality advice to streamers (analytics/advice.py; docs/protocol.md, "Quality advice").
    advice_enabled: bool = True
    advice_window: Duration = timedelta(seconds=15)
    advice_loss_pct: float = Field(3.0, gt=0, le=100)
    advice_latency_ms: float = Field(1000.0, gt=0)
    advice_latency_rise_ms: float = Field(100.0, gt=0)
    advice_headroom_ratio: float = Field(0.9, gt=0, le=1)
    advice_headroom_target: float = Field(0.75, gt=0, le=1)
    advice_fps_ratio: float = Field(0.8, gt=0, le=1)
    advice_raise_hold: Duration = timedelta(seconds=60)
    advice_min_interval: Duration = timedelta(seconds=15)
    advice_floor_kbps: float = Field(300.0, ge=0)
    advice_floor_height: int = Field(360, ge=0)
    advice_floor_fps: float = Field(15.0, ge=0)

    @field_validator(
        "write_timeout",
        "raw_retention",
        "rollup_1m_retention",
        "rollup_interval",
        "drops_interval",
        "drop_window",
        "drop_baseline_window",
        "drops_first_lookback",
        "presence_ttl",
        "webhook_timeout",
        "webhook_retry_for",
        "webhook_backoff",
        "connect_timeout",
        "ping_interval",
        "ping_timeout",
        "token_clock_skew",
        "advice_window",
        "advice_raise_hold",
        "advice_min_interval",
        "alert_rebuffer_window",
        "rebuffering_interval",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("cors_origins", "webhook_urls", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        if len(set(value)) != len(value):
            raise ValueError("a URL is listed twice")
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `STREAMSTATS_WEBHOOK_SECRET=` (as compose passes an unset variable) means no secret.
        return None if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_WEBHOOK_SECRET_BYTES:
            # Short keys can be guessed offline from any one signed delivery.
            raise ValueError(
                f"must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes (e.g. $(openssl rand -hex 32))"
            )
        return value

    @cached_property
    def cors_allowed(self) -> str | list[str]:
        """The value python-socketio expects: `"*"` or a list of origins."""
        return "*" if self.cors_origins == ["*"] else list(self.cors_origins)

    def require_jwt_secret(self) -> str:
        """The signing secret, or a SettingsError saying how to set it."""
        if self.jwt_secret is None or not self.jwt_secret.get_secret_value():
            raise SettingsError(
                f"{PREFIX}JWT_SECRET is not set: the server needs it to verify tokens "
                f"(e.g. export {PREFIX}JWT_SECRET=$(openssl rand -hex 32))"
            )
        secret = self.jwt_secret.get_secret_value()
        if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            # HS256 with a short secret can be brute-forced offline from any one token.
            raise SettingsError(
                f"{PREFIX}JWT_SECRET is {len(secret.encode())} bytes; at least "
                f"{MIN_JWT_SECRET_BYTES} are required (e.g. $(openssl rand -hex 32))"
            )
        return secret

    def require_webhook_secret(self) -> bytes:
        """The webhook signing key, or a SettingsError when URLs are set without one."""
        if self.webhook_secret is None or not self.webhook_secret.get_secret_value():
            raise SettingsError(
                f"{PREFIX}WEBHOOK_SECRET is not set: {PREFIX}WEBHOOK_URLS needs it to sign "
                f"deliveries (e.g. export {PREFIX}WEBHOOK_SECRET=$(openssl rand -hex 32))"
            )
        return self.webhook_secret.get_secret_value().encode()


def _variable(field: str) -> str:
    """The environment variable behind a field (errors name aliased fields by their alias)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if info is None:
        return field.upper()
    return f"{PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            given = error.get("input")
            shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
            if field.endswith("_secret"):
                shown = ""  # never echo a secret into logs
            problems.append(f"{_variable(field)}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
