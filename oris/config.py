"""Settings for every Oris process, read from ``ORIS_*`` environment variables.

Nothing here performs I/O at import time: settings are read when a process builds them.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Backend(StrEnum):
    """Persistence backend of the runtime."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


class LogFormat(StrEnum):
    """How log lines are rendered."""

    JSON = "json"
    TEXT = "text"


class ConfigError(Exception):
    """A setting is missing or invalid; the message is safe to print (no secrets)."""


class ServerSettings(BaseSettings):
    """Settings of the API server (``oris serve``) and the schema commands (``oris db``)."""

    model_config = SettingsConfigDict(env_prefix="ORIS_", extra="ignore", validate_default=True)

    server_addr: str = "127.0.0.1:8080"
    runtime_backend: str = "sqlite"
    sqlite_db: str = "oris_runtime.db"
    postgres_dsn: SecretStr | None = None
    runtime_dsn: SecretStr | None = None
    postgres_schema: str = "oris_runtime"
    postgres_require_schema: bool = True
    postgres_pool_size: Annotated[int, Field(ge=1, le=200)] = 16

    api_auth_bearer_token: SecretStr | None = None
    api_auth_api_key: SecretStr | None = None
    api_auth_api_key_id: str | None = None
    api_auth_api_key_role: str = "operator"
    auth_disabled: bool = False

    lease_ttl_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    lease_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 5.0
    maintenance_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    # Schedules are ticked by every maintenance pass; a tick older than this when it is
    # handled counts as missed (the runtime was down) and follows the schedule's catch_up.
    schedule_misfire_grace_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    max_active_leases_per_worker: Annotated[int, Field(ge=1, le=100_000)] = 8
    max_active_leases_per_tenant: Annotated[int, Field(ge=1, le=100_000)] = 8
    replay_claim_ttl_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    metrics_rate_window_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    metrics_count_interval_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    unacked_finished_bound_seconds: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    # Finished jobs are deleted this long after they finished; 0 keeps them forever.
    retention_completed_seconds: Annotated[float, Field(ge=0)] = 7 * 86_400.0
    retention_cancelled_seconds: Annotated[float, Field(ge=0)] = 7 * 86_400.0
    # Failed jobs whose dead letters were all replayed or discarded (never a pending one).
    retention_dead_lettered_seconds: Annotated[float, Field(ge=0)] = 30 * 86_400.0
    retention_batch_size: Annotated[int, Field(ge=1, le=1000)] = 500

    # Every migration gives up on a lock after this long instead of queueing every writer
    # (and every poll) behind it; ``oris db upgrade`` retries that many times.
    migration_lock_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    migration_statement_timeout_seconds: Annotated[float, Field(ge=0, le=86_400)] = 600.0
    migration_lock_retries: Annotated[int, Field(ge=0, le=100)] = 3

    rate_limit_per_second: Annotated[float, Field(ge=0, le=1_000_000)] = 0.0
    rate_limit_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    auth_max_failures_per_window: Annotated[int, Field(ge=0, le=1_000_000)] = 20
    auth_failure_window_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    audit_denial_window_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    log_format: LogFormat = LogFormat.JSON
    log_level: str = "INFO"

    @field_validator("postgres_schema")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not _SCHEMA_NAME.match(value):
            raise ValueError(
                "ORIS_POSTGRES_SCHEMA must match [A-Za-z_][A-Za-z0-9_]* (at most 63 characters)"
            )
        return value

    @field_validator("api_auth_api_key_role")
    @classmethod
    def _key_role(cls, value: str) -> str:
        role = value.strip().lower()
        if role not in {"admin", "operator", "viewer", "worker"}:
            raise ValueError("must be one of: admin, operator, viewer, worker")
        return role

    @model_validator(mode="after")
    def _backend_choice(self) -> ServerSettings:
        backend = self.runtime_backend.strip().lower()
        if backend not in {b.value for b in Backend}:
            raise ValueError(
                f"invalid ORIS_RUNTIME_BACKEND={self.runtime_backend!r}. "
                "expected one of: sqlite, postgres"
            )
        self.runtime_backend = backend
        if backend == Backend.POSTGRES and self.effective_postgres_dsn is None:
            raise ValueError(
                "ORIS_RUNTIME_BACKEND=postgres requires ORIS_POSTGRES_DSN (or ORIS_RUNTIME_DSN)"
            )
        return self

    @property
    def backend(self) -> Backend:
        """The selected backend as an enum."""
        return Backend(self.runtime_backend)

    @property
    def effective_postgres_dsn(self) -> str | None:
        """``ORIS_POSTGRES_DSN``, falling back to ``ORIS_RUNTIME_DSN``."""
        for candidate in (self.postgres_dsn, self.runtime_dsn):
            if candidate is not None and candidate.get_secret_value().strip():
                return candidate.get_secret_value().strip()
        return None

    @property
    def host_port(self) -> tuple[str, int]:
        """Split ``ORIS_SERVER_ADDR`` into host and port."""
        host, sep, port = self.server_addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(
                f"ORIS_SERVER_ADDR={self.server_addr!r} must be HOST:PORT, e.g. 127.0.0.1:8080"
            )
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def binds_loopback(self) -> bool:
        """Whether the server address only accepts connections from this machine."""
        host, _ = self.host_port
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class ClientSettings(BaseSettings):
    """Settings shared by the worker and the operator CLI, which talk to the API over HTTP."""

    model_config = SettingsConfigDict(env_prefix="ORIS_", extra="ignore")

    server_url: str = "http://127.0.0.1:8080"
    api_token: SecretStr | None = None
    api_key_id: str | None = None
    api_key: SecretStr | None = None
    request_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0


class WorkerSettings(ClientSettings):
    """Settings of ``oris worker``."""

    worker_id: str | None = None
    worker_concurrency: Annotated[int, Field(ge=1, le=1024)] = 4
    worker_app: str | None = None
    worker_shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    worker_poll_max_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    worker_poll_wait_ms: Annotated[int, Field(ge=0, le=30_000)] = 5_000
    worker_auth_backoff_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    log_format: LogFormat = LogFormat.JSON
    log_level: str = "INFO"


def describe_validation_error(error: ValidationError) -> str:
    """Render a settings validation error as one readable line per field, without values."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        name = f"ORIS_{location.upper()}" if location else "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if location else message)
    return "; ".join(lines)


def load_server_settings(**overrides: object) -> ServerSettings:
    """Build server settings from the environment, raising ``ConfigError`` on bad values."""
    try:
        return ServerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
