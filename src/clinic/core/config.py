"""The clinic's one settings object, read from the environment (prefix ``CLINIC_``) once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clinic.core.secrets import generated_secret, private_dir

SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name under var/secrets, not a secret


class Settings(BaseSettings):
    """Everything configurable about one clinic instance.

    Every instance of every colour must share ``secret_key`` so a session cookie signed by one
    is accepted by all. No secret has a default: unset outside production, the key is generated
    once under ``var_dir/secrets`` (0600) and shared by every instance using that ``var_dir``;
    unset in production, the settings are refused.
    """

    model_config = SettingsConfigDict(env_prefix="CLINIC_", extra="ignore", frozen=True)

    environment: Annotated[str, Field(pattern="^(development|test|production)$")] = "development"
    database_url: str | None = None
    """PostgreSQL URL. Unset: an embedded PostgreSQL is started with its data under ``var_dir``."""
    var_dir: Path = Path("var")
    secret_key: str = Field(min_length=16, repr=False)
    release_id: str = Field(
        default="dev", validation_alias=AliasChoices("CLINIC_RELEASE_ID", "BLUEGREEN_RELEASE")
    )
    color: str | None = Field(default=None, validation_alias=AliasChoices("BLUEGREEN_COLOR"))

    # Sessions and login protection.
    session_max_age: timedelta = timedelta(days=7)
    cookie_secure: bool | None = None
    """Force the Secure flag; None = set it when the request came over HTTPS."""
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout: timedelta = timedelta(minutes=15)
    login_slowdown_after: int = Field(default=3, ge=1)
    login_slowdown_seconds: float = Field(default=1.0, ge=0)
    password_min_length: int = Field(default=10, ge=8)
    register_per_address: int = Field(default=10, ge=1)
    """Registrations one address may make per ``register_period`` (per instance)."""
    register_total: int = Field(default=120, ge=1)
    """Registrations an instance accepts per ``register_period`` from all addresses."""
    register_period: timedelta = timedelta(minutes=10)

    # Booking rules that are the clinic's, not a doctor's.
    patient_cancel_cutoff: timedelta = timedelta(hours=2)
    max_slot_range_days: int = Field(default=62, ge=1)

    db_pool_size: int = Field(default=10, ge=1)
    db_pool_timeout: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))
    """How long a request waits for a free database connection before it is answered 503
    with ``Retry-After`` (the instance is overloaded; another one, or a moment later, helps)."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Request bodies larger than this are refused (413) before they are parsed."""
    # A signalling message (an SDP offer) is a few KB; the data plane does not read websocket
    # frames, so the app caps a message's inflated size (uvicorn closes with 1009 past it).
    max_websocket_message_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)

    # Video visits.
    visit_join_before: timedelta = timedelta(minutes=10)
    """How long before the start a visit can be joined."""
    visit_join_after: timedelta = timedelta(minutes=30)
    """How long after the end a visit can still be joined."""
    join_token_ttl: timedelta = timedelta(minutes=5)
    stun_urls: list[str] = ["stun:stun.l.google.com:19302"]
    turn_urls: list[str] = []
    """TURN servers (coturn with ``use-auth-secret``); credentials are minted per user."""
    turn_secret: str | None = None
    turn_credential_ttl: timedelta = timedelta(hours=1)

    # Email and background jobs.
    smtp_host: str | None = None
    """Unset: mail goes to the outbox table, readable by admins (the demo works offline)."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Annotated[str, Field(pattern="^(starttls|tls|none)$")] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Clinic <no-reply@clinic.example.org>"
    reminder_offsets: list[timedelta] = [timedelta(hours=24), timedelta(hours=1)]
    worker_in_process: bool = True
    """Run a job worker inside each app instance (else run ``clinic worker`` separately)."""
    worker_drain_timeout: timedelta = timedelta(seconds=10)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    worker_poll_interval: timedelta = timedelta(seconds=5)
    """Fallback polling between LISTEN/NOTIFY wake-ups."""
    worker_heartbeat_interval: timedelta = timedelta(seconds=10)
    worker_stalled_timeout: timedelta = timedelta(seconds=30)
    """A worker without a heartbeat for this long is dead: its jobs are handed to others."""
    job_max_attempts: int = Field(default=6, ge=1, le=50)
    """Runs of a failing job before it is kept as failed (visible on /admin/jobs)."""
    job_retry_base: timedelta = timedelta(seconds=10)
    """Backoff: the n-th retry waits ``job_retry_base * 2**(n-1)`` (capped at one hour)."""
    jobs_tick: timedelta = timedelta(minutes=1)
    """Period of the reminder / no-show / stalled-job sweep (deferred once per period)."""
    purge_after: timedelta = timedelta(days=30)
    """Revoked API tokens, stale login throttles and finished jobs older than this go."""
    smtp_timeout: float = Field(default=10.0, gt=0)
    clock_offset: timedelta = timedelta(0)
    """Shifts the background jobs' clock (tests and demos "advance the schedule")."""

    migration_lock_timeout: Annotated[str, Field(pattern=r"^\d+(ms|s|min)?$")] = "5s"
    """How long a migration waits for a table lock before it fails (instead of stalling the
    live release behind it)."""
    seed_demo: bool = False
    """``clinic db upgrade`` also seeds the demo data (``make up`` sets it)."""

    smoke_password: str | None = None
    """Password of the synthetic smoke-test accounts. Unset: generated once, kept in
    ``var_dir/secrets/smoke-password`` (owner-only)."""

    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this separate port (0: any free one); unset: not served.
    Never the application's port, which the public listener reaches (clinic/metrics.py)."""
    metrics_host: str = "127.0.0.1"

    # accounts
    login_address_max_failures: int = Field(default=100, ge=1)
    """Failed logins from one address, over all accounts, before the address is refused for
    ``login_lockout`` (``login_max_failures`` counts one account from one address)."""
    api_token_ttl: timedelta = Field(default=timedelta(days=90), gt=timedelta(0))
    """How long a new API token lives unless its creator asks for less (or more, up to
    ``api_token_max_ttl``)."""
    api_token_max_ttl: timedelta = Field(default=timedelta(days=365), gt=timedelta(0))
    forwarded_allow_ips: str = "127.0.0.1"
    """Peers whose X-Forwarded-For/-Proto are believed (comma-separated addresses or
    networks; bluegreen's Envoy runs on loopback). Anyone else's are ignored."""
    visit_recheck_interval: timedelta = Field(default=timedelta(seconds=15), gt=timedelta(0))
    """How often an open visit socket re-checks its session or token and its appointment."""
    password_reset_ttl: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0))
    """How long a password reset link works (once)."""
    email_verify_ttl: timedelta = Field(default=timedelta(days=7), gt=timedelta(0))
    """How long the link confirming a new patient's email address works."""
    public_url: str | None = None
    """The clinic's address as patients reach it (``https://clinic.example.org``), used in
    links sent by email. Unset: the address the request came to (set it in production: a
    forged Host header must not choose where a reset link points)."""

    def secret_file(self, name: str) -> Path:
        return self.var_dir / "secrets" / name

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value.removeprefix(prefix)
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("CLINIC_DATABASE_URL must be a postgresql:// URL")
        return value

    @model_validator(mode="before")
    @classmethod
    def _secret_key_or_generated(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("secret_key"):
            return data
        if data.get("environment") == "production":
            raise ValueError(
                "CLINIC_SECRET_KEY must be set in production (the same value on every instance)"
            )
        var_dir = private_dir(Path(data.get("var_dir") or cls.model_fields["var_dir"].default))
        key = generated_secret(var_dir / "secrets" / SECRET_KEY_FILE, length=32)
        return {**data, "secret_key": key}

    # clinic identity
    # Shown in every page's footer, on error pages, in emails and at GET /api/v1/clinic. Public
    # facts, not secrets: the demo defaults are fictitious (555 numbers, an .example address).
    clinic_name: str = Field(
        default="Riverside Clinic", min_length=1, validation_alias=AliasChoices("clinic_name")
    )
    """``CLINIC_NAME``."""
    clinic_address: str = Field(
        default="12 Example Street, 10115 Berlin",
        validation_alias=AliasChoices("clinic_address"),
    )
    """``CLINIC_ADDRESS``."""
    clinic_phone: str = Field(
        default="+49 30 5550 1234", validation_alias=AliasChoices("clinic_phone")
    )
    """``CLINIC_PHONE``: where patients call, e.g. to cancel inside the cut-off."""
    clinic_emergency_notice: str = Field(
        default=(
            "In an emergency, call 112 (Europe) or 911 (US). This service is not for emergencies."
        ),
        validation_alias=AliasChoices("clinic_emergency_notice"),
    )
    """``CLINIC_EMERGENCY_NOTICE``."""
