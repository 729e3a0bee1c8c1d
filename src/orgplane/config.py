"""Settings, read from the environment (prefix ``ORGPLANE_``) and an optional ``.env`` file."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "orgplane-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORGPLANE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./orgplane.db"
    secret_key: str = DEFAULT_SECRET_KEY
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    server: Literal["granian", "uvicorn"] = "granian"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    # Rate limits in the `limits` notation ("600/minute"); empty disables that limit.
    rate_limit_per_key: str = "6000/minute"
    rate_limit_per_org: str = "30000/minute"
    # Unauthenticated endpoints that check a password or a token (sign-in, invitation accept,
    # password reset, email confirmation), per client IP: each attempt costs an argon2 hash.
    rate_limit_sign_in_per_ip: str = "30/minute"
    # Failed authentications (a wrong, unknown, expired or revoked key or pair) per client IP;
    # past it, that address's failures answer 429 while valid keys, from anywhere, still work.
    rate_limit_auth_failures_per_ip: str = "30/minute"
    redis_url: str | None = None
    # The address people reach orgplane at (https://orgplane.example.com): the console's
    # cookies are Secure when it is https, and its links are built on it.
    public_url: str | None = None
    max_tree_depth: int = Field(default=10, ge=1, le=64)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    # How long a key lookup stays cached in the process; revocation clears it at once.
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # How often buffered access-log rows and key last-used times are written. Small batches
    # often: writing half a second of a busy worker's entries (~3,000 rows) slowed the requests
    # around it enough to set their p99 (10.4 ms at 0.5 s, 8.5 ms at 0.1 s, SQLite, 32 conns).
    access_log_flush_seconds: float = Field(default=0.1, gt=0)
    restore_window_days: int = Field(default=30, ge=1)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    # Serve GET /orgs/{id} with an API key outside the framework (api/fastpath.py).
    fast_reads: bool = True
    # Webhooks (core/webhooks). Destinations in these networks (comma-separated CIDRs) pass the
    # address check that otherwise refuses loopback, private, link-local, CGNAT and other
    # non-public addresses; plain http is allowed only to them.
    webhook_allowed_networks: str = ""
    # Seconds to wait before each retry of a failed delivery, in order (jittered by +-20%): with
    # the first attempt, eight attempts over about a day and a half.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,50400"
    # An endpoint whose deliveries have all failed for this long is disabled.
    webhook_disable_after_days: float = Field(default=5.0, gt=0)
    # "inprocess": `orgplane serve` dispatches and delivers in each server process; "off" when
    # `orgplane worker` processes do it.
    webhook_delivery: Literal["inprocess", "off"] = "inprocess"
    # How long a claimed delivery is reserved for its worker; past it, another worker retries it.
    webhook_lease_seconds: float = Field(default=60.0, gt=0)
    # How often an idle worker looks for new events and due deliveries (an in-process worker
    # also wakes when its process commits an event).
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Deliveries a worker has in flight (claimed, not yet recorded); at most 32 requests go to
    # one endpoint at once (its connections), the others wait their turn within the timeout.
    webhook_concurrency: int = Field(default=512, ge=1, le=4096)
    # The NATS JetStream sink (core/events/jetstream.py): every event published on
    # "<prefix>.<tenant>.<type>" to the stream named here (created, capturing "<prefix>.>", if
    # there is none), where webhooks are delivered. Off while the URL is empty.
    events_nats_url: str = ""
    events_nats_stream: str = Field(default="ORGPLANE", pattern=r"^[A-Za-z0-9_-]{1,255}$")
    events_nats_subject_prefix: str = Field(
        default="orgplane", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length=200
    )
    # While NATS cannot be reached, the sink retries after 0.5 s, doubling up to this.
    events_nats_backoff_max_seconds: float = Field(default=30.0, gt=0)
    # How often an idle sink looks for new events.
    events_nats_poll_seconds: float = Field(default=1.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not a network (CIDR, e.g. 127.0.0.0/8)") from None
        return value

    @field_validator("events_nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if not part.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(
                    "must be nats://host:port (or tls://, ws://, wss://), comma-separated"
                )
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            delays = [float(p) for p in value.split(",") if p.strip()]
        except ValueError:
            raise ValueError("must be comma-separated seconds, e.g. 5,300,1800") from None
        if any(d < 0 for d in delays):
            raise ValueError("delays must not be negative")
        return value

    @property
    def webhook_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = (p.strip() for p in self.webhook_allowed_networks.split(","))
        return tuple(ipaddress.ip_network(p, strict=False) for p in parts if p)

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(p) for p in self.webhook_retry_schedule.split(",") if p.strip())

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET_KEY:
            raise ValueError(
                "ORGPLANE_SECRET_KEY must be set to a secret of your own in production"
            )
        if self.environment == "production" and len(self.secret_key) < 32:
            raise ValueError("ORGPLANE_SECRET_KEY must be at least 32 characters in production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
