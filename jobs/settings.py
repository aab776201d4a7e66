"""One validated settings object, read once from the environment.

Values come from an optional ``environment.env`` file, overridden by the
process environment. :meth:`Settings.load` is the only place in the code base
that reads ``os.environ``; everything else receives the object it returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from cryptography.fernet import Fernet
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from middleware.policy import QueuePolicy

DEFAULT_ENV_FILE = "environment.env"

QueueName = Literal["email", "image-processing", "analytics", "cleanup"]
QUEUES: tuple[QueueName, ...] = ("email", "image-processing", "analytics", "cleanup")

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


class SettingsError(ValueError):
    """Raised when the environment holds a value we cannot use.

    The message names every offending variable and what it accepts; values of
    secret variables are never repeated back.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class Settings(BaseModel):
    """Every setting of taatom-jobs. Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # --- mode ---------------------------------------------------------------
    app_env: Literal["development", "test", "staging", "production"] = Field("development", alias="APP_ENV")
    enable_background_jobs: bool = Field(False, alias="ENABLE_BACKGROUND_JOBS")

    # --- Redis (broker, state, results) -------------------------------------
    redis_url: SecretStr | None = Field(None, alias="REDIS_URL")
    redis_host: str = Field("127.0.0.1", alias="REDIS_HOST")
    redis_port: Port = Field(6379, alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(None, alias="REDIS_PASSWORD")
    redis_db: Annotated[int, Field(ge=0, le=1023)] = Field(0, alias="REDIS_DB")
    redis_namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = Field(
        "taatom", alias="REDIS_NAMESPACE"
    )
    # redis-py 8 defaults to a 5 s socket timeout, which would cut blocking
    # reads (result waits, wake-ups) short; ours is explicit and longer.
    redis_socket_timeout_s: PositiveFloat = Field(30.0, alias="REDIS_SOCKET_TIMEOUT_S")

    # --- Redis Sentinel ---
    # host:port of each Sentinel, comma-separated. When set, the master is the
    # one these Sentinels name (REDIS_URL, REDIS_HOST and REDIS_PORT are not
    # used) and every client follows a failover; REDIS_PASSWORD and REDIS_DB
    # still apply to the master.
    redis_sentinels: str = Field("", alias="REDIS_SENTINELS")
    redis_sentinel_master: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] = Field(
        "mymaster", alias="REDIS_SENTINEL_MASTER"
    )
    # Password of the Sentinels themselves (their requirepass), if they have one.
    redis_sentinel_password: SecretStr | None = Field(None, alias="REDIS_SENTINEL_PASSWORD")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_list(cls, value: str) -> str:
        cls.parse_sentinels(value)
        return value

    @model_validator(mode="after")
    def _sentinel_or_url(self) -> Settings:
        if self.redis_sentinel_addresses and self.redis_url is not None:
            raise ValueError(
                "REDIS_URL and REDIS_SENTINELS exclude each other: with Sentinel the master's address "
                "comes from the Sentinels (set REDIS_PASSWORD and REDIS_DB for the master)"
            )
        return self

    @staticmethod
    def parse_sentinels(value: str) -> list[tuple[str, int]]:
        """``"h1:26379, [::1]:26380"`` -> ``[("h1", 26379), ("::1", 26380)]``.

        Raises ValueError naming the first entry that is not host:port.
        """
        addresses: list[tuple[str, int]] = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            host, _, port = entry.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{entry!r} is not host:port (e.g. 10.0.0.5:26379)")
            addresses.append((host, int(port)))
        return addresses

    @property
    def redis_sentinel_addresses(self) -> list[tuple[str, int]]:
        return self.parse_sentinels(self.redis_sentinels)

    # --- MongoDB ---------------------------------------------------------------
    mongo_url: SecretStr | None = Field(None, alias="MONGO_URL")
    mongo_db: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")] = Field("taatom", alias="MONGO_DB")

    # --- e-mail ------------------------------------------------------------------
    smtp_host: str | None = Field(None, alias="SMTP_HOST")
    smtp_port: Port = Field(587, alias="SMTP_PORT")
    smtp_user: str | None = Field(None, alias="SMTP_USER")
    smtp_password: SecretStr | None = Field(None, alias="SMTP_PASSWORD")
    smtp_security: Literal["starttls", "ssl", "none"] = Field("starttls", alias="SMTP_SECURITY")
    smtp_timeout_s: PositiveFloat = Field(10.0, alias="SMTP_TIMEOUT_S")
    email_from: str = Field("Taatom <no-reply@taatom.app>", alias="EMAIL_FROM")
    email_outbox_dir: Path | None = Field(None, alias="EMAIL_OUTBOX_DIR")
    # Verify the SMTP server's certificate; false is for tests only (refused in production).
    smtp_verify_tls: bool = Field(True, alias="SMTP_VERIFY_TLS")
    # PEM bundle trusted for the SMTP server instead of the system store (a private CA).
    smtp_ca_file: Path | None = Field(None, alias="SMTP_CA_FILE")
    email_log_collection: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,120}$")] = Field(
        "email_log", alias="EMAIL_LOG_COLLECTION"
    )
    email_log_retention_days: PositiveInt = Field(30, alias="EMAIL_LOG_RETENTION_DAYS")

    @field_validator("smtp_verify_tls")
    @classmethod
    def _tls_verified_in_production(cls, value: bool, info: Any) -> bool:
        if not value and info.data.get("app_env") == "production":
            raise ValueError("must be true in production (turning verification off is for tests)")
        return value

    # --- operator surface -------------------------------------------------------------
    dashboard_user: str | None = Field(None, alias="DASHBOARD_USER")
    dashboard_password: SecretStr | None = Field(None, alias="DASHBOARD_PASSWORD")
    dashboard_token: SecretStr | None = Field(None, alias="DASHBOARD_TOKEN")

    # --- embedded mode -------------------------------------------------------------
    embedded_data_dir: Path = Field(Path(".taatom-jobs"), alias="EMBEDDED_DATA_DIR")
    embedded_worker_threads: Annotated[int, Field(ge=1, le=64)] = Field(4, alias="EMBEDDED_WORKER_THREADS")

    # --- image processing job ---
    # Processed images go to a directory (file) or a MongoDB GridFS bucket (gridfs).
    image_storage: Literal["file", "gridfs"] = Field("file", alias="IMAGE_STORAGE")
    # Default: EMBEDDED_DATA_DIR/images.
    image_storage_dir: Path | None = Field(None, alias="IMAGE_STORAGE_DIR")
    # processed_url = this + the stored key; default: the directory's file:// URL
    # (file) or gridfs://BUCKET/ (gridfs).
    image_public_base_url: str | None = Field(None, alias="IMAGE_PUBLIC_BASE_URL")
    image_gridfs_bucket: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        "images", alias="IMAGE_GRIDFS_BUCKET"
    )
    # Caps: bytes downloaded, and pixels (width x height) of a source and of every
    # output; at most 80 MP, below Pillow's own bomb threshold (89.5 MP).
    image_max_bytes: Annotated[int, Field(ge=1024, le=512 * 1024 * 1024)] = Field(
        25 * 1024 * 1024, alias="IMAGE_MAX_BYTES"
    )
    image_max_pixels: Annotated[int, Field(ge=1, le=80_000_000)] = Field(60_000_000, alias="IMAGE_MAX_PIXELS")
    # One deadline for the whole download, redirects included.
    image_fetch_timeout_s: PositiveFloat = Field(20.0, alias="IMAGE_FETCH_TIMEOUT_S")
    image_max_redirects: Annotated[int, Field(ge=0, le=20)] = Field(5, alias="IMAGE_MAX_REDIRECTS")
    image_fetch_ports: str = Field("80,443", alias="IMAGE_FETCH_PORTS")
    # Test-only: host:port pairs exempt from the address and port rules; refused in production.
    image_fetch_allow_hosts: str = Field("", alias="IMAGE_FETCH_ALLOW_HOSTS")
    # Child processes per worker process that decode and transform (docs/images.md,
    # "Sandbox"); 0 runs the pipeline in the worker thread, without that protection.
    image_sandbox_processes: Annotated[int, Field(ge=0, le=64)] = Field(2, alias="IMAGE_SANDBOX_PROCESSES")
    # Address space of each child in MiB (0: no cap). A 60 MP AVIF encode needs over
    # 2 GiB of it; 4 GiB leaves room for the largest outputs IMAGE_MAX_PIXELS allows.
    image_sandbox_max_memory_mb: Annotated[int, Field(ge=0, le=1024 * 1024)] = Field(
        4096, alias="IMAGE_SANDBOX_MAX_MEMORY_MB"
    )

    @field_validator("image_public_base_url")
    @classmethod
    def _image_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "file://")):
            raise ValueError("must start with http://, https:// or file://")
        return value

    @field_validator("image_fetch_ports", "image_fetch_allow_hosts")
    @classmethod
    def _image_fetch_lists(cls, value: str, info: Any) -> str:
        from .images.addresses import parse_host_ports, parse_ports

        parse = parse_ports if info.field_name == "image_fetch_ports" else parse_host_ports
        parse(value)
        return value

    @model_validator(mode="after")
    def _image_consistent(self) -> Settings:
        if self.is_production and self.image_fetch_allow_hosts.strip():
            raise ValueError(
                "IMAGE_FETCH_ALLOW_HOSTS must be empty when APP_ENV=production (it is for tests only)"
            )
        if self.image_fetch_timeout_s >= self.image_time_limit_s:
            raise ValueError("IMAGE_FETCH_TIMEOUT_S must be shorter than IMAGE_TIME_LIMIT_S")
        if 0 < self.image_sandbox_max_memory_mb < 1024:
            raise ValueError(
                "IMAGE_SANDBOX_MAX_MEMORY_MB must be 0 (no cap) or at least 1024: the decoder "
                "libraries alone take ~250 MiB of address space, a 60 MP image 180 MiB per copy"
            )
        return self

    @property
    def image_storage_path(self) -> Path:
        return self.image_storage_dir or self.embedded_data_dir / "images"

    # --- policy: attempts, backoff, limits, per queue -------------------------------
    backoff_min_ms: PositiveInt = Field(2000, alias="JOBS_BACKOFF_MIN_MS")
    backoff_max_ms: PositiveInt = Field(300_000, alias="JOBS_BACKOFF_MAX_MS")
    backoff_jitter: Annotated[float, Field(ge=0, le=1)] = Field(0.25, alias="JOBS_BACKOFF_JITTER")

    email_concurrency: PositiveInt = Field(5, alias="EMAIL_CONCURRENCY")
    image_concurrency: PositiveInt = Field(3, alias="IMAGE_CONCURRENCY")
    analytics_concurrency: PositiveInt = Field(2, alias="ANALYTICS_CONCURRENCY")
    cleanup_concurrency: PositiveInt = Field(1, alias="CLEANUP_CONCURRENCY")

    email_max_attempts: PositiveInt = Field(3, alias="EMAIL_MAX_ATTEMPTS")
    image_max_attempts: PositiveInt = Field(3, alias="IMAGE_MAX_ATTEMPTS")
    analytics_max_attempts: PositiveInt = Field(3, alias="ANALYTICS_MAX_ATTEMPTS")
    cleanup_max_attempts: PositiveInt = Field(3, alias="CLEANUP_MAX_ATTEMPTS")

    email_backoff_min_ms: PositiveInt | None = Field(None, alias="EMAIL_BACKOFF_MIN_MS")
    image_backoff_min_ms: PositiveInt | None = Field(None, alias="IMAGE_BACKOFF_MIN_MS")
    analytics_backoff_min_ms: PositiveInt | None = Field(None, alias="ANALYTICS_BACKOFF_MIN_MS")
    cleanup_backoff_min_ms: PositiveInt | None = Field(None, alias="CLEANUP_BACKOFF_MIN_MS")

    email_time_limit_s: PositiveFloat = Field(60, alias="EMAIL_TIME_LIMIT_S")
    image_time_limit_s: PositiveFloat = Field(120, alias="IMAGE_TIME_LIMIT_S")
    analytics_time_limit_s: PositiveFloat = Field(900, alias="ANALYTICS_TIME_LIMIT_S")
    cleanup_time_limit_s: PositiveFloat = Field(1800, alias="CLEANUP_TIME_LIMIT_S")

    cleanup_min_older_than_days: PositiveInt = Field(7, alias="CLEANUP_MIN_OLDER_THAN_DAYS")

    # --- fleet: liveness, slots, state, unique keys --------------------------------
    # A worker process whose heartbeat is older than this is dead: its
    # in-flight messages run again and its concurrency slots come back.
    worker_heartbeat_timeout_ms: Annotated[int, Field(ge=2000)] = Field(
        10_000, alias="WORKER_HEARTBEAT_TIMEOUT_MS"
    )
    job_state_ttl_s: PositiveInt = Field(7 * 86_400, alias="JOB_STATE_TTL_S")
    unique_ttl_s: PositiveInt = Field(86_400, alias="UNIQUE_TTL_S")
    # Largest encoded message send() accepts (VAL_2001 beyond it).
    max_message_bytes: Annotated[int, Field(ge=1024)] = Field(4 * 1024 * 1024, alias="JOBS_MAX_MESSAGE_BYTES")

    # --- analytics and cleanup jobs ---
    # Collection names (DESIGN.md, "MongoDB collections"); four different collections.
    analytics_events_collection: str = Field(
        "analytics_events",
        alias="ANALYTICS_EVENTS_COLLECTION",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$",
    )
    analytics_hourly_collection: str = Field(
        "analytics_hourly",
        alias="ANALYTICS_HOURLY_COLLECTION",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$",
    )
    analytics_daily_collection: str = Field(
        "analytics_daily", alias="ANALYTICS_DAILY_COLLECTION", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$"
    )
    error_logs_collection: str = Field(
        "error_logs", alias="ERROR_LOGS_COLLECTION", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$"
    )
    # A longer aggregate_analytics range is refused (VAL_2001): one job, one time limit.
    analytics_max_range_days: Annotated[int, Field(ge=1, le=3660)] = Field(
        366, alias="ANALYTICS_MAX_RANGE_DAYS"
    )
    # Cleanup deletes in batches of about this many documents (never more than twice as
    # many), pausing between batches, and logs its progress every so many batches.
    cleanup_batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(1000, alias="CLEANUP_BATCH_SIZE")
    cleanup_batch_pause_ms: Annotated[int, Field(ge=0, le=60_000)] = Field(0, alias="CLEANUP_BATCH_PAUSE_MS")
    cleanup_progress_every_batches: PositiveInt = Field(10, alias="CLEANUP_PROGRESS_EVERY_BATCHES")

    @model_validator(mode="after")
    def _distinct_collections(self) -> Settings:
        names = {
            "ANALYTICS_EVENTS_COLLECTION": self.analytics_events_collection,
            "ANALYTICS_HOURLY_COLLECTION": self.analytics_hourly_collection,
            "ANALYTICS_DAILY_COLLECTION": self.analytics_daily_collection,
            "ERROR_LOGS_COLLECTION": self.error_logs_collection,
        }
        seen: dict[str, str] = {}
        for variable, name in names.items():
            if name in seen:
                raise ValueError(f"{seen[name]} and {variable} must name different collections ({name!r})")
            seen[name] = variable
        return self

    # --- secrets in messages ----------------------------------------------------
    jobs_encryption_key: SecretStr | None = Field(None, alias="JOBS_ENCRYPTION_KEY")
    jobs_encryption_old_keys: SecretStr | None = Field(None, alias="JOBS_ENCRYPTION_OLD_KEYS")

    # --- scheduler ---
    # Cron expressions are UTC: crontab's 5 fields, or 6 with seconds first.
    schedule_analytics_hourly_cron: str = Field("5 * * * *", alias="SCHEDULE_ANALYTICS_HOURLY_CRON")
    schedule_analytics_daily_cron: str = Field("15 0 * * *", alias="SCHEDULE_ANALYTICS_DAILY_CRON")
    schedule_cleanup_analytics_cron: str = Field("0 3 * * *", alias="SCHEDULE_CLEANUP_ANALYTICS_CRON")
    schedule_cleanup_error_logs_cron: str = Field("30 3 * * *", alias="SCHEDULE_CLEANUP_ERROR_LOGS_CRON")
    retention_analytics_days: PositiveInt = Field(90, alias="RETENTION_ANALYTICS_DAYS")
    retention_error_logs_days: PositiveInt = Field(30, alias="RETENTION_ERROR_LOGS_DAYS")
    scheduler_lookback_hours: Annotated[int, Field(ge=1, le=24 * 31)] = Field(
        48, alias="SCHEDULER_LOOKBACK_HOURS"
    )
    scheduler_misfire_grace_s: PositiveInt = Field(60, alias="SCHEDULER_MISFIRE_GRACE_S")
    scheduler_heartbeat_s: Annotated[float, Field(ge=0.1, le=300)] = Field(
        10.0, alias="SCHEDULER_HEARTBEAT_S"
    )
    scheduler_replica_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")] | None = Field(
        None, alias="SCHEDULER_REPLICA_ID"
    )

    @field_validator(
        "schedule_analytics_hourly_cron",
        "schedule_analytics_daily_cron",
        "schedule_cleanup_analytics_cron",
        "schedule_cleanup_error_logs_cron",
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        # The scheduler's own parser, so that what passes here is exactly what it runs.
        from scheduler.cron import parse_cron

        return parse_cron(value).expression

    @model_validator(mode="after")
    def _retention_allowed(self) -> Settings:
        for name, days in (
            ("RETENTION_ANALYTICS_DAYS", self.retention_analytics_days),
            ("RETENTION_ERROR_LOGS_DAYS", self.retention_error_logs_days),
        ):
            if days < self.cleanup_min_older_than_days:
                raise ValueError(
                    f"{name}={days} is below CLEANUP_MIN_OLDER_THAN_DAYS={self.cleanup_min_older_than_days}:"
                    " the cleanup job would refuse every scheduled run"
                )
        return self

    # --- observability -----------------------------------------------------------
    sentry_dsn: SecretStr | None = Field(None, alias="SENTRY_DSN")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    log_format_setting: Literal["json", "text"] | None = Field(None, alias="LOG_FORMAT")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _drop_unset(cls, data: Any) -> Any:
        # `FOO=` in an env file or a shell export means "not set": the
        # default applies rather than a type error.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() == "")}
        return data

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return value

    @field_validator("jobs_encryption_key", "jobs_encryption_old_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                if key.strip():
                    try:
                        Fernet(key.strip().encode())
                    except (ValueError, TypeError):
                        raise ValueError(
                            "must be Fernet keys: 32 url-safe base64-encoded bytes each"
                        ) from None
        return value

    @field_validator("mongo_url")
    @classmethod
    def _mongo_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.backoff_min_ms > self.backoff_max_ms:
            raise ValueError("JOBS_BACKOFF_MIN_MS must not exceed JOBS_BACKOFF_MAX_MS")
        if self.is_production and not self.smtp_host:
            raise ValueError("SMTP_HOST is required when APP_ENV=production (the outbox is for development)")
        if (self.dashboard_user is None) != (self.dashboard_password is None):
            raise ValueError("DASHBOARD_USER and DASHBOARD_PASSWORD are set together")
        if self.is_production and not (self.mongo_url):
            raise ValueError("MONGO_URL is required when APP_ENV=production")
        return self

    # --- derived values -------------------------------------------------------------
    @property
    def dashboard_protected(self) -> bool:
        return self.dashboard_password is not None or self.dashboard_token is not None

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def real_mode(self) -> bool:
        """Real mode sends messages to Redis for `dramatiq jobs` workers."""
        return self.enable_background_jobs or self.is_production

    @property
    def log_format(self) -> Literal["json", "text"]:
        if self.log_format_setting is not None:
            return self.log_format_setting
        return "json" if self.is_production else "text"

    def redis_connection_url(self) -> str:
        """The Redis URL with its password; never log the return value."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        auth = ""
        if self.redis_password is not None:
            auth = ":" + quote(self.redis_password.get_secret_value(), safe="") + "@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def default_queue_policy(self) -> QueuePolicy:
        """The policy of a queue not named in the settings."""
        return QueuePolicy(
            name="*",
            concurrency=1,
            max_attempts=3,
            backoff_min_ms=self.backoff_min_ms,
            backoff_max_ms=self.backoff_max_ms,
            backoff_jitter=self.backoff_jitter,
            time_limit_ms=600_000,
        )

    def queue_policy(self, queue: str) -> QueuePolicy:
        prefix = {
            "email": "email",
            "image-processing": "image",
            "analytics": "analytics",
            "cleanup": "cleanup",
        }
        if queue not in prefix:
            raise KeyError(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")
        p = prefix[queue]
        backoff_min = getattr(self, f"{p}_backoff_min_ms") or self.backoff_min_ms
        return QueuePolicy(
            name=queue,
            concurrency=getattr(self, f"{p}_concurrency"),
            max_attempts=getattr(self, f"{p}_max_attempts"),
            backoff_min_ms=backoff_min,
            backoff_max_ms=max(self.backoff_max_ms, backoff_min),
            backoff_jitter=self.backoff_jitter,
            time_limit_ms=int(getattr(self, f"{p}_time_limit_s") * 1000),
        )

    # --- loading -----------------------------------------------------------------------
    @classmethod
    def env_names(cls) -> set[str]:
        return {f.alias for f in cls.model_fields.values() if f.alias}

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None]) -> Settings:
        """Validate settings from a mapping of environment variable names to values."""
        names = cls.env_names()
        data = {k.upper(): v for k, v in values.items() if k.upper() in names and v is not None}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, data)) from None

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = DEFAULT_ENV_FILE,
        overrides: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from ``env_file`` (if it exists) overridden by ``environ``.

        ``environ`` defaults to the process environment; ``ENV_FILE`` in it
        names another file to read instead of ``environment.env``.
        ``overrides`` win over both (the demo forces embedded mode with them).
        """
        environ = os.environ if environ is None else environ
        env_file = environ.get("ENV_FILE", env_file)
        merged: dict[str, str | None] = {}
        if env_file is not None and Path(env_file).is_file():
            merged.update({k.upper(): v for k, v in dotenv_values(env_file).items()})
        merged.update({k.upper(): v for k, v in environ.items()})
        merged.update({k.upper(): v for k, v in (overrides or {}).items()})
        return cls.from_mapping(merged)


_SECRET_FIELDS = {
    name.upper()
    for name in (
        "REDIS_URL",
        "REDIS_PASSWORD",
        "REDIS_SENTINEL_PASSWORD",
        "MONGO_URL",
        "SMTP_PASSWORD",
        "DASHBOARD_PASSWORD",
        "DASHBOARD_TOKEN",
        "SENTRY_DSN",
        "JOBS_ENCRYPTION_KEY",
        "JOBS_ENCRYPTION_OLD_KEYS",
    )
}


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        reason = err["msg"].removeprefix("Value error, ")
        if not name:
            problems.append(reason)
        elif name in _SECRET_FIELDS or name not in data:
            problems.append(f"{name}: {reason}")
        else:
            problems.append(f"{name}={data[name]!r}: {reason}")
    return problems
