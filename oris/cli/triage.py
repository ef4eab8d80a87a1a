"""``oris triage``: collect the runbook's triage data into an evidence folder and summarise.

Each signal is judged as its alert rule (docs/observability/prometheus-alert-rules.yml) judges
it: over the rule's window, not over the few seconds triage runs. The API process keeps a
slot-by-slot history of its counters and of the queue depth (``GET /v1/metrics/history``), so
a run started after the event still sees the increase over the last ten minutes. A server
without that history (or a caller without the read role) is judged over the two scrapes
``--sample-seconds`` apart instead, and the output says so.

When the API cannot be reached, the bundle is still written: the connection error, the local
settings with every secret masked, and the database's health when a database is configured
here; the playbook is "API unavailable" and the exit code 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, fail
from oris.cli.operator import (
    ApiKeyIdOption,
    ApiKeyOption,
    ApiTokenOption,
    RequestTimeoutOption,
    ServerUrlOption,
    client_settings,
)

if TYPE_CHECKING:
    from oris.client.http import OrisClient
    from oris.config import ClientSettings

AUDIT_WINDOW_SECONDS = 3600
DATABASE_CHECK_TIMEOUT_SECONDS = 10.0

# The alert rules' thresholds and windows.
ERROR_RATE_THRESHOLD = 0.05
CONFLICT_RATE_THRESHOLD = 0.2
RECOVERY_P95_THRESHOLD_MS = 10_000.0
BACKPRESSURE_INCREASE_THRESHOLD = 25
QUEUE_WINDOW_SECONDS = 300  # OrisRuntimeQueueNotDispatching: min_over_time, increase [5m]
BACKPRESSURE_WINDOW_SECONDS = 600  # OrisRuntimeSustainedBackpressure: [10m]
RECOVERY_WINDOW_SECONDS = 600  # OrisRuntimeHighRecoveryLatency: rate(...[10m])
ERROR_WINDOW_SECONDS = 600  # OrisRuntimeHighErrorRate: for 10m
CONFLICT_WINDOW_SECONDS = 600  # OrisRuntimeLeaseConflictsRising: for 10m

API_UNAVAILABLE = "API unavailable"
SCHEMA_PLAYBOOK = "Failed deploy after schema change"
BACKPRESSURE_PLAYBOOK = "Sustained backpressure"
NO_DISPATCH_PLAYBOOK = "Queue depth rising, no dispatch"
ERROR_RATE_PLAYBOOK = "High terminal error rate"
NO_PLAYBOOK = "none: every signal is within its threshold"

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|(^|_)API_KEY$|(^|_)KEY$)")
_DSN_NAME = re.compile(r"DSN|URL")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
MASK = "***"


# --- windows ----------------------------------------------------------------------------------


class Windows(Protocol):
    """Where the counters and the queue depth stood over a trailing window."""

    @property
    def basis(self) -> str:
        """``history`` (the server's record) or ``sample`` (two scrapes)."""
        ...

    def covered(self, window_seconds: float) -> float:
        """How much of the window the evidence spans, in seconds."""
        ...

    def increase(self, name: str, window_seconds: float) -> float:
        """How much a series (or, without labels, a whole family) grew in the window."""
        ...

    def gauge_range(self, name: str, window_seconds: float) -> tuple[float, float] | None:
        """The lowest and highest value a gauge was seen at in the window."""
        ...


def _in_family(key: str, name: str) -> bool:
    return key == name or (key.startswith(name + "{") and "{" not in name)


@dataclass(frozen=True, slots=True)
class ServerHistory:
    """The API process's own slot-by-slot history (``GET /v1/metrics/history``)."""

    now_ms: int
    started_ms: int
    resolution_seconds: float
    counters: dict[str, list[list[float]]]
    gauges: dict[str, list[list[float]]]
    basis: str = "history"

    @classmethod
    def parse(cls, data: Any) -> ServerHistory | None:
        """The history from the endpoint's ``data``, or None when it is not one."""
        try:
            return cls(
                now_ms=int(data["now_ms"]),
                started_ms=int(data["process_started_at_ms"]),
                resolution_seconds=float(data["resolution_seconds"]),
                counters={str(k): list(v) for k, v in data["counters"].items()},
                gauges={str(k): list(v) for k, v in data["gauges"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _since(self, window_seconds: float) -> float:
        # A slot counts when any part of it lies inside the window.
        return self.now_ms - window_seconds * 1000 - self.resolution_seconds * 1000

    def covered(self, window_seconds: float) -> float:
        return min(window_seconds, max(self.now_ms - self.started_ms, 0) / 1000)

    def increase(self, name: str, window_seconds: float) -> float:
        since = self._since(window_seconds)
        return sum(
            slot[1]
            for key, slots in self.counters.items()
            if _in_family(key, name)
            for slot in slots
            if slot[0] > since
        )

    def gauge_range(self, name: str, window_seconds: float) -> tuple[float, float] | None:
        since = self._since(window_seconds)
        seen = [slot for slot in self.gauges.get(name, []) if slot[0] > since]
        if not seen:
            return None
        return min(slot[1] for slot in seen), max(slot[2] for slot in seen)


@dataclass(frozen=True, slots=True)
class ScrapeSample:
    """Two scrapes ``seconds`` apart: all a server without history offers."""

    first: dict[str, float]
    second: dict[str, float]
    seconds: float
    basis: str = "sample"

    def covered(self, window_seconds: float) -> float:
        return min(window_seconds, self.seconds)

    def increase(self, name: str, window_seconds: float) -> float:
        def summed(metrics: dict[str, float]) -> float:
            return sum(v for k, v in metrics.items() if _in_family(k, name))

        return summed(self.second) - summed(self.first)

    def gauge_range(self, name: str, window_seconds: float) -> tuple[float, float] | None:
        values = [m[name] for m in (self.first, self.second) if name in m]
        return (min(values), max(values)) if values else None


# --- signals ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """One key signal: its value now, what it did over its alert window, and the verdict."""

    name: str
    value: float | None
    window_seconds: float
    covered_seconds: float
    threshold: str
    breached: bool
    increase: float | None = None
    low: float | None = None
    high: float | None = None
    windowed: float | None = None
    basis: str = "history"

    def over_window(self) -> str:
        """What the signal did over its window, for a person."""
        span = _duration(self.window_seconds)
        if self.covered_seconds < self.window_seconds:
            span = f"{span}, {_duration(self.covered_seconds)} seen"
        if self.increase is not None:
            text = f"+{self.increase:.6g}"
        elif self.low is not None and self.high is not None:
            text = f"min {self.low:.6g} max {self.high:.6g}"
        elif self.windowed is not None:
            text = f"{self.windowed:.6g}"
        else:
            text = "-"
        return f"{text} in {span}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "value": self.value,
            "window_seconds": self.window_seconds,
            "covered_seconds": self.covered_seconds,
            "increase": self.increase,
            "min": self.low,
            "max": self.high,
            "windowed": self.windowed,
            "over_window": self.over_window(),
            "threshold": self.threshold,
            "breached": self.breached,
            "basis": self.basis,
        }


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def signals(
    scrape: dict[str, float], windows: Windows, *, queued_now: bool = False
) -> list[Signal]:
    """The runbook's key signals, each judged over its alert rule's window.

    ``queued_now``: the job list read by this triage run shows queued work. The queue-depth
    gauge is a background count up to a few seconds old, so work queued just before a burst of
    refused polls may not be in it yet."""
    from oris.client.metrics import histogram_p95, total

    basis = windows.basis
    depth = scrape.get("oris_runtime_queue_depth", 0.0)

    queue_range = windows.gauge_range("oris_runtime_queue_depth", QUEUE_WINDOW_SECONDS)
    queue_low, queue_high = queue_range or (depth, depth)
    dispatched = windows.increase("oris_runtime_dispatches_total", QUEUE_WINDOW_SECONDS)
    not_dispatching = min(queue_low, depth) > 0 and dispatched == 0
    queue_covered = windows.covered(QUEUE_WINDOW_SECONDS)

    backpressure = windows.increase("oris_runtime_backpressure_total", BACKPRESSURE_WINDOW_SECONDS)
    depth_range = windows.gauge_range("oris_runtime_queue_depth", BACKPRESSURE_WINDOW_SECONDS)
    queued_in_window = queued_now or max((depth_range or (depth, depth))[1], depth) > 0

    recovery_buckets = {
        key: windows.increase(key, RECOVERY_WINDOW_SECONDS)
        for key in scrape
        if key.startswith("oris_runtime_recovery_latency_ms_bucket{")
    }
    recovery = histogram_p95(recovery_buckets, "oris_runtime_recovery_latency_ms")

    errors = windows.increase(
        'oris_runtime_terminal_acks_total{status="failed"}', ERROR_WINDOW_SECONDS
    ) + windows.increase(
        'oris_runtime_terminal_acks_total{status="cancelled"}', ERROR_WINDOW_SECONDS
    )
    finished = windows.increase("oris_runtime_terminal_acks_total", ERROR_WINDOW_SECONDS)
    error_rate = _ratio(errors, finished)
    if basis == "sample":
        error_rate = scrape.get("oris_runtime_terminal_error_rate", 0.0)

    conflicts = windows.increase("oris_runtime_lease_conflicts_total", CONFLICT_WINDOW_SECONDS)
    operations = windows.increase("oris_runtime_lease_operations_total", CONFLICT_WINDOW_SECONDS)
    conflict_rate = _ratio(conflicts, operations)
    if basis == "sample":
        conflict_rate = scrape.get("oris_runtime_lease_conflict_rate", 0.0)

    return [
        Signal(
            "oris_runtime_queue_depth",
            depth,
            QUEUE_WINDOW_SECONDS,
            queue_covered,
            "min > 0 and no dispatch",
            not_dispatching,
            low=queue_low,
            high=queue_high,
            basis=basis,
        ),
        Signal(
            "oris_runtime_dispatches_total",
            total(scrape, "oris_runtime_dispatches_total"),
            QUEUE_WINDOW_SECONDS,
            queue_covered,
            "increase 0 while queued",
            not_dispatching,
            increase=dispatched,
            basis=basis,
        ),
        Signal(
            "oris_runtime_lease_conflict_rate",
            scrape.get("oris_runtime_lease_conflict_rate", 0.0),
            CONFLICT_WINDOW_SECONDS,
            windows.covered(CONFLICT_WINDOW_SECONDS),
            f"> {CONFLICT_RATE_THRESHOLD}",
            conflict_rate > CONFLICT_RATE_THRESHOLD,
            windowed=conflict_rate,
            basis=basis,
        ),
        Signal(
            "oris_runtime_recovery_latency_ms",
            histogram_p95(scrape, "oris_runtime_recovery_latency_ms"),
            RECOVERY_WINDOW_SECONDS,
            windows.covered(RECOVERY_WINDOW_SECONDS),
            f"p95 > {RECOVERY_P95_THRESHOLD_MS:.0f} ms",
            recovery is not None and recovery > RECOVERY_P95_THRESHOLD_MS,
            windowed=recovery,
            basis=basis,
        ),
        Signal(
            "oris_runtime_backpressure_total",
            total(scrape, "oris_runtime_backpressure_total"),
            BACKPRESSURE_WINDOW_SECONDS,
            windows.covered(BACKPRESSURE_WINDOW_SECONDS),
            f"increase > {BACKPRESSURE_INCREASE_THRESHOLD} while queued",
            backpressure > BACKPRESSURE_INCREASE_THRESHOLD and queued_in_window,
            increase=backpressure,
            basis=basis,
        ),
        Signal(
            "oris_runtime_terminal_error_rate",
            scrape.get("oris_runtime_terminal_error_rate", 0.0),
            ERROR_WINDOW_SECONDS,
            windows.covered(ERROR_WINDOW_SECONDS),
            f"> {ERROR_RATE_THRESHOLD}",
            error_rate > ERROR_RATE_THRESHOLD,
            windowed=error_rate,
            basis=basis,
        ),
    ]


def _labelled(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """``{label value: sample}`` of one family with a single label."""
    prefix = f'{name}{{{label}="'
    return {
        key[len(prefix) : -2]: value for key, value in metrics.items() if key.startswith(prefix)
    }


def table_health(metrics: dict[str, float]) -> dict[str, Any]:
    """What retention and vacuum leave behind: the oldest finished job retention could purge
    (per status), the tables' sizes and dead tuples, and the oldest open transaction."""
    return {
        "oldest_finished_job_age_seconds": _labelled(
            metrics, "oris_runtime_oldest_finished_job_age_seconds", "status"
        ),
        "database_size_bytes": metrics.get("oris_runtime_database_size_bytes"),
        "table_size_bytes": _labelled(metrics, "oris_runtime_table_size_bytes", "table"),
        "table_dead_tuples": _labelled(metrics, "oris_runtime_table_dead_tuples", "table"),
        "oldest_transaction_age_seconds": metrics.get(
            "oris_runtime_oldest_transaction_age_seconds"
        ),
    }


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    units = ("B", "kB", "MB", "GB", "TB")
    index = 0
    while value >= 1024 and index < len(units) - 1:
        value /= 1024
        index += 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {units[index]}"


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"


def render_table_health(health: dict[str, Any]) -> list[str]:
    """The table-health lines of the summary screen."""
    ages = health["oldest_finished_job_age_seconds"]
    lines = [
        "oldest finished job (not purged yet): "
        + ", ".join(f"{status} {_age(ages.get(status, 0.0))}" for status in sorted(ages))
    ]
    sizes: dict[str, float] = health["table_size_bytes"]
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    lines.append(
        f"database size: {_bytes(health['database_size_bytes'])}"
        + (
            " (largest: " + ", ".join(f"{name} {_bytes(size)}" for name, size in largest) + ")"
            if largest
            else ""
        )
    )
    dead: dict[str, float] = health["table_dead_tuples"]
    if dead:
        worst = max(dead.items(), key=lambda item: item[1])
        oldest = health["oldest_transaction_age_seconds"]
        lines.append(
            f"dead tuples: {sum(dead.values()):.0f} (most: {worst[0]} {worst[1]:.0f}); "
            f"oldest open transaction: {0.0 if oldest is None else oldest:.0f}s"
        )
    return lines


def playbook(
    health_ok: bool, health: dict[str, Any], found: list[Signal], stale: float, workers: int
) -> str:
    """The runbook playbook the evidence points to."""
    by_name = {s.name: s for s in found}
    reason = str(health.get("reason", ""))
    if not health_ok:
        if "schema" in reason:
            return SCHEMA_PLAYBOOK
        return API_UNAVAILABLE
    # Backpressure first: polls refused for a cap explain a queue that does not drain.
    if by_name["oris_runtime_backpressure_total"].breached:
        return BACKPRESSURE_PLAYBOOK
    if by_name["oris_runtime_queue_depth"].breached or (stale > 0 and workers == 0):
        return NO_DISPATCH_PLAYBOOK
    if by_name["oris_runtime_terminal_error_rate"].breached:
        return ERROR_RATE_PLAYBOOK
    if (
        by_name["oris_runtime_lease_conflict_rate"].breached
        or by_name["oris_runtime_recovery_latency_ms"].breached
    ):
        return NO_DISPATCH_PLAYBOOK
    return NO_PLAYBOOK


# --- collection -------------------------------------------------------------------------------


def _error_document(error: Exception) -> dict[str, Any]:
    return {
        "error": {
            "status": getattr(error, "status", None),
            "code": getattr(error, "code", None),
            "message": getattr(error, "message", str(error)),
            "request_id": getattr(error, "request_id", None),
        }
    }


@dataclass(slots=True)
class Evidence:
    """What one triage run collected; whatever was reached before the API stopped answering."""

    health_status: int | None = None
    health: Any = None
    metrics_first: str | None = None
    metrics_second: str | None = None
    history: Any = None
    documents: dict[str, Any] = field(default_factory=dict)
    connection_error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] | None = None


async def gather(
    client: OrisClient, evidence: Evidence, sample_seconds: float, audit_window_seconds: int
) -> None:
    """Read everything the runbook's triage step asks for into ``evidence``, in order."""
    from oris.client.http import ApiError

    async def safe(call: Any) -> Any:
        try:
            return await call
        except ApiError as error:
            return _error_document(error)

    health_response = await client.raw("GET", "/healthz")
    evidence.health_status = health_response.status_code
    try:
        evidence.health = health_response.json()
    except ValueError:
        evidence.health = {"status": "unreadable", "body": health_response.text[:500]}
    evidence.metrics_first = (await client.raw("GET", "/metrics")).text
    await asyncio.sleep(sample_seconds)
    evidence.metrics_second = (await client.raw("GET", "/metrics")).text
    evidence.history = await safe(client.request("GET", "/v1/metrics/history"))
    now_ms = int(time.time() * 1000)
    evidence.documents["jobs.json"] = await safe(client.list_jobs(limit=20))
    evidence.documents["audit.json"] = await safe(
        client.audit_logs(from_ms=now_ms - audit_window_seconds * 1000, limit=500)
    )
    evidence.documents["dlq.json"] = await safe(client.list_dlq(limit=100))
    evidence.documents["workers.json"] = await safe(
        client.request("GET", "/v1/workers", params={"window_seconds": 300})
    )
    evidence.documents["incidents.json"] = await safe(client.request("GET", "/v1/incidents"))


def mask_value(name: str, value: str) -> str:
    """``value`` of the environment variable ``name`` with any secret in it masked."""
    if not value:
        return value
    if _SECRET_NAME.search(name.upper()):
        return MASK
    if _DSN_NAME.search(name.upper()):
        return mask_dsn(value)
    return value


def mask_dsn(value: str) -> str:
    """A connection string with its password replaced by ``***`` (URL or keyword form)."""
    masked = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, value)
    try:
        parts = urlsplit(masked)
    except ValueError:
        return MASK
    if parts.password is None:
        return masked
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}{port}"))


def local_settings(settings: ClientSettings) -> dict[str, Any]:
    """The client's effective settings and every ``ORIS_*`` variable, secrets masked."""
    return {
        "client": {
            "server_url": settings.server_url,
            "api_token": MASK if settings.api_token else None,
            "api_key_id": settings.api_key_id,
            "api_key": MASK if settings.api_key else None,
            "request_timeout_seconds": settings.request_timeout_seconds,
        },
        "environment": {
            name: mask_value(name, value)
            for name, value in sorted(os.environ.items())
            if name.startswith("ORIS_")
        },
    }


def database_health() -> dict[str, Any] | None:
    """The configured database's reachability and schema version; None when none is set here.

    Only when this host names a database (``ORIS_POSTGRES_DSN``/``ORIS_RUNTIME_DSN``, or an
    existing ``ORIS_SQLITE_DB`` with ``ORIS_RUNTIME_BACKEND=sqlite``): triage never creates one.
    """
    backend = os.environ.get("ORIS_RUNTIME_BACKEND", "").strip().lower()
    has_dsn = any(
        os.environ.get(name, "").strip() for name in ("ORIS_POSTGRES_DSN", "ORIS_RUNTIME_DSN")
    )
    sqlite_file = os.environ.get("ORIS_SQLITE_DB", "").strip()
    if has_dsn:
        chosen = "postgres"
    elif backend == "postgres":
        return {"checked": False, "reason": "ORIS_RUNTIME_BACKEND=postgres without a DSN"}
    elif sqlite_file and Path(sqlite_file).is_file():
        chosen = "sqlite"
    else:
        return None
    # Only this path needs the database stack.
    from oris.config import ConfigError, load_server_settings
    from oris.services.bootstrap import check_schema, open_database

    try:
        settings = load_server_settings(runtime_backend=chosen)
    except ConfigError as error:
        return {"checked": False, "reason": str(error)}
    database = open_database(settings, application_name="oris-triage")
    result: dict[str, Any] = {
        "checked": True,
        "backend": settings.backend.value,
        "target": database.target.display,
    }

    async def check() -> None:
        try:
            status = await asyncio.wait_for(
                check_schema(database), timeout=DATABASE_CHECK_TIMEOUT_SECONDS
            )
        except TimeoutError:
            result.update(
                reachable=False,
                error=f"no answer within {DATABASE_CHECK_TIMEOUT_SECONDS:.0f} s",
            )
        except Exception as error:  # the reason is the evidence; never a trace
            result.update(reachable=False, error=str(error).splitlines()[0][:300])
        else:
            result.update(
                reachable=True,
                schema_version=status.database_version or 0,
                code_schema_version=status.code_version,
                at_head=status.at_head,
            )
            if not status.at_head:
                result["problem"] = status.describe(settings.backend)
        finally:
            await database.dispose()

    asyncio.run(check())
    return result


# --- the summary and the bundle ---------------------------------------------------------------


def _windows(evidence: Evidence, sample_seconds: float) -> tuple[dict[str, float], Windows]:
    from oris.client.metrics import parse_metrics

    first = parse_metrics(evidence.metrics_first or "")
    second = parse_metrics(evidence.metrics_second or evidence.metrics_first or "")
    history = None
    if isinstance(evidence.history, dict) and "error" not in evidence.history:
        history = ServerHistory.parse(evidence.history)
    windows: Windows = history or ScrapeSample(first, second, sample_seconds)
    return second, windows


def _queued_now(jobs: Any) -> bool:
    """Whether the job list this run read holds queued work."""
    listed = jobs.get("jobs", []) if isinstance(jobs, dict) else []
    return any(isinstance(job, dict) and job.get("status") == "queued" for job in listed)


def summarise(
    evidence: Evidence, server_url: str, folder: Path, sample_seconds: float
) -> dict[str, Any]:
    """The one-screen summary and the playbook the evidence points to."""
    summary: dict[str, Any] = {
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "server_url": server_url,
        "evidence": str(folder),
    }
    if evidence.connection_error is not None or evidence.metrics_first is None:
        summary.update(
            health={
                "ok": False,
                "status_code": evidence.health_status,
                "reason": f"API unreachable: {evidence.connection_error}",
            },
            reachable=False,
            connection_error=evidence.connection_error,
            signals=[],
            database=evidence.database,
            playbook=API_UNAVAILABLE,
        )
        return summary
    health = evidence.health if isinstance(evidence.health, dict) else {}
    scrape, windows = _windows(evidence, sample_seconds)
    found = signals(scrape, windows, queued_now=_queued_now(evidence.documents.get("jobs.json")))
    health_ok = evidence.health_status == 200
    workers_doc = evidence.documents.get("workers.json")
    workers = workers_doc.get("workers", []) if isinstance(workers_doc, dict) else []
    stale = scrape.get("oris_runtime_stale_leases", 0.0)
    unacked = (
        workers_doc.get("unacked_finished_attempts", []) if isinstance(workers_doc, dict) else []
    )
    summary.update(
        health={"ok": health_ok, "status_code": evidence.health_status, **health},
        reachable=True,
        signals=[s.as_dict() for s in found],
        judged_over=windows.basis,
        backpressure_by_reason={
            reason: windows.increase(
                f'oris_runtime_backpressure_total{{reason="{reason}"}}',
                BACKPRESSURE_WINDOW_SECONDS,
            )
            for reason in ("worker_limit", "tenant_limit")
        },
        workers_seen=[w["worker_id"] for w in workers],
        stale_leases=stale,
        table_health=table_health(scrape),
        unacked_finished={
            "count": scrape.get("oris_runtime_unacked_finished_attempts", 0.0),
            "bound_seconds": workers_doc.get("unacked_finished_bound_seconds")
            if isinstance(workers_doc, dict)
            else None,
            "attempts": [item["attempt_id"] for item in unacked if isinstance(item, dict)],
        },
        open_incident=health.get("incident"),
        playbook=playbook(health_ok, health, found, stale, len(workers)),
    )
    return summary


def evidence_folder(output_dir: Path, when: time.struct_time) -> Path:
    """A new bundle folder named by the time: ``triage-YYYYmmddTHHMMSSZ``, with ``-2``, ``-3``…
    when a bundle of the same second is already there (two triage runs in one second)."""
    base = f"triage-{time.strftime('%Y%m%dT%H%M%SZ', when)}"
    folder = output_dir / base
    suffix = 2
    while folder.exists():
        folder = output_dir / f"{base}-{suffix}"
        suffix += 1
    return folder


def write_evidence(folder: Path, evidence: Evidence, summary: dict[str, Any]) -> None:
    """The evidence folder with a SHA-256 manifest of every file."""
    folder.mkdir(parents=True, exist_ok=False)

    def dumped(document: Any) -> str:
        return json.dumps(document, indent=2, sort_keys=True)

    files: dict[str, str] = {"summary.json": dumped(summary)}
    if evidence.health_status is not None:
        files["healthz.json"] = dumped(
            {"status_code": evidence.health_status, "body": evidence.health}
        )
    if evidence.metrics_first is not None:
        files["metrics-1.prom"] = evidence.metrics_first
    if evidence.metrics_second is not None:
        files["metrics-2.prom"] = evidence.metrics_second
    if evidence.history is not None:
        files["metrics-history.json"] = dumped(evidence.history)
    files.update({name: dumped(doc) for name, doc in evidence.documents.items()})
    if evidence.connection_error is not None:
        files["connection.json"] = dumped(
            {"server_url": summary["server_url"], "error": evidence.connection_error}
        )
        files["settings.json"] = dumped(evidence.settings)
        if evidence.database is not None:
            files["database.json"] = dumped(evidence.database)
    lines = []
    for name, content in sorted(files.items()):
        data = (content.rstrip("\n") + "\n").encode()
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (folder / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def _render_unreachable(summary: dict[str, Any]) -> list[str]:
    lines = [f"API         UNREACHABLE: {summary['connection_error']}"]
    database = summary.get("database")
    if database is None:
        lines.append("database    not checked (no database configured on this host)")
    elif not database.get("checked"):
        lines.append(f"database    not checked: {database.get('reason')}")
    elif database.get("reachable"):
        state = "at head" if database.get("at_head") else "NOT at head"
        lines.append(
            f"database    reachable ({database['backend']} {database['target']}), schema "
            f"{database['schema_version']} of {database['code_schema_version']} ({state})"
        )
        if database.get("problem"):
            lines.append(f"            {database['problem']}: see also '{SCHEMA_PLAYBOOK}'")
    else:
        lines.append(
            f"database    UNREACHABLE ({database['backend']} {database['target']}): "
            f"{database.get('error')}"
        )
    lines.append("settings    settings.json (secrets masked)")
    return lines


def render(summary: dict[str, Any]) -> str:
    """One screen for a person."""
    health = summary["health"]
    lines = [f"Oris triage  {summary['collected_at']}  {summary['server_url']}"]
    if not summary["reachable"]:
        lines += _render_unreachable(summary)
    else:
        lines += [
            f"health      {'ok' if health['ok'] else 'FAILING'} ({health.get('status_code')}) "
            f"{health.get('reason', '') or ''}".rstrip(),
            "",
            f"{'signal':<34} {'value':>10}  {'over the alert window':<28} "
            f"{'alert threshold':<30} state",
        ]
        for signal in summary["signals"]:
            value = "-" if signal["value"] is None else f"{signal['value']:.6g}"
            state = "BEYOND" if signal["breached"] else "ok"
            over = signal["over_window"]
            lines.append(
                f"{signal['name']:<34} {value:>10}  {over:<28} {signal['threshold']:<30} {state}"
            )
        by_reason = summary["backpressure_by_reason"]
        basis = (
            "the server's counter history"
            if summary["judged_over"] == "history"
            else "two scrapes only (this server keeps no counter history)"
        )
        lines += [
            "",
            f"judged over {basis}",
            f"backpressure in {_duration(BACKPRESSURE_WINDOW_SECONDS)}: "
            f"worker_limit {by_reason['worker_limit']:.0f}, "
            f"tenant_limit {by_reason['tenant_limit']:.0f}",
            f"workers seen (5 min): {len(summary['workers_seen'])} "
            f"{' '.join(summary['workers_seen'][:8])}",
            f"leases stuck past expiry: {summary['stale_leases']:.0f}",
            _unacked_line(summary["unacked_finished"]),
            "open incident: "
            + (summary["open_incident"]["incident_id"] if summary["open_incident"] else "none"),
            *render_table_health(summary["table_health"]),
        ]
    lines += [
        "",
        f"playbook: {summary['playbook']}",
        f"evidence: {summary['evidence']} (MANIFEST.sha256)",
    ]
    return "\n".join(lines)


def _unacked_line(unacked: dict[str, Any]) -> str:
    """Attempts whose worker declared the outcome decided but never acked (runbook: "Finished
    attempts never acked")."""
    bound = unacked.get("bound_seconds")
    after = "" if bound is None else f" > {bound:g} s"
    named = " ".join(unacked["attempts"][:8])
    return f"finished, not acked{after}: {unacked['count']:.0f} {named}".rstrip()


def triage(
    server_url: ServerUrlOption = None,
    api_token: ApiTokenOption = None,
    api_key_id: ApiKeyIdOption = None,
    api_key: ApiKeyOption = None,
    request_timeout_seconds: RequestTimeoutOption = None,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", envvar="ORIS_TRIAGE_DIR", help="Where the evidence folder is created."
        ),
    ] = Path("evidence"),
    sample_seconds: Annotated[
        float,
        typer.Option(
            "--sample-seconds",
            min=0.0,
            max=60.0,
            help="Seconds between the two metric scrapes (the fallback when the server keeps "
            "no counter history).",
        ),
    ] = 2.0,
    audit_window_seconds: Annotated[
        int,
        typer.Option("--audit-window-seconds", min=1, help="How much of the audit log to keep."),
    ] = AUDIT_WINDOW_SECONDS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Collect health, metrics, recent jobs, the audit window and the DLQ; name the playbook."""
    import httpx

    from oris.client.http import OrisClient, ServerUnreachable

    settings = client_settings(
        server_url=server_url,
        api_token=api_token,
        api_key_id=api_key_id,
        api_key=api_key,
        request_timeout_seconds=request_timeout_seconds,
    )
    folder = evidence_folder(output_dir, time.gmtime())
    evidence = Evidence()

    async def go() -> None:
        async with OrisClient(settings) as client:
            await gather(client, evidence, sample_seconds, audit_window_seconds)

    try:
        asyncio.run(go())
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        fail(f"invalid server URL {settings.server_url!r}: {error}", EXIT_USAGE)
    except (ServerUnreachable, httpx.TransportError) as error:
        # ServerUnreachable already names the URL and the transport error.
        unreachable = isinstance(error, ServerUnreachable)
        evidence.connection_error = (
            str(error) if unreachable else f"{type(error).__name__}: {error}"
        )
        evidence.settings = local_settings(settings)
        evidence.database = database_health()
    summary = summarise(evidence, settings.server_url, folder, sample_seconds)
    try:
        write_evidence(folder, evidence, summary)
    except FileExistsError:
        fail(f"evidence folder {folder} already exists")
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    else:
        typer.echo(render(summary))
    if not summary["reachable"]:
        print(f"oris: server unreachable: {evidence.connection_error}", file=sys.stderr)
        raise typer.Exit(EXIT_UNREACHABLE)
    if not summary["health"]["ok"]:
        raise typer.Exit(EXIT_FAILURE)
