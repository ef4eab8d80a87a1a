"""``oris triage``: collect the runbook's triage data into an evidence folder and summarise."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_UNREACHABLE, fail
from oris.client import ApiError, OrisClient, ServerUnreachable
from oris.client.metrics import histogram_p95, parse_metrics, total
from oris.config import ClientSettings

AUDIT_WINDOW_SECONDS = 3600
ERROR_RATE_THRESHOLD = 0.05
CONFLICT_RATE_THRESHOLD = 0.2
RECOVERY_P95_THRESHOLD_MS = 10_000.0


@dataclass(frozen=True, slots=True)
class Signal:
    """One of the runbook's key signals."""

    name: str
    value: float | None
    threshold: str
    breached: bool


def signals(first: dict[str, float], second: dict[str, float]) -> list[Signal]:
    """The five runbook signals from two scrapes a few seconds apart."""
    depth = second.get("oris_runtime_queue_depth", 0.0)
    dispatched = total(second, "oris_runtime_dispatches_total") - total(
        first, "oris_runtime_dispatches_total"
    )
    backpressure = total(second, "oris_runtime_backpressure_total") - total(
        first, "oris_runtime_backpressure_total"
    )
    conflict = second.get("oris_runtime_lease_conflict_rate", 0.0)
    error_rate = second.get("oris_runtime_terminal_error_rate", 0.0)
    recovery = histogram_p95(second, "oris_runtime_recovery_latency_ms")
    return [
        Signal(
            "oris_runtime_queue_depth", depth, "> 0 with no dispatch", depth > 0 and dispatched == 0
        ),
        Signal(
            "oris_runtime_lease_conflict_rate",
            conflict,
            f"> {CONFLICT_RATE_THRESHOLD}",
            conflict > CONFLICT_RATE_THRESHOLD,
        ),
        Signal(
            "oris_runtime_recovery_latency_ms",
            recovery,
            f"p95 > {RECOVERY_P95_THRESHOLD_MS:.0f} ms",
            recovery is not None and recovery > RECOVERY_P95_THRESHOLD_MS,
        ),
        Signal(
            "oris_runtime_backpressure_total",
            backpressure,
            "increasing while queue depth > 0",
            backpressure > 0 and depth > 0,
        ),
        Signal(
            "oris_runtime_terminal_error_rate",
            error_rate,
            f"> {ERROR_RATE_THRESHOLD}",
            error_rate > ERROR_RATE_THRESHOLD,
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
            return "Failed deploy after schema change"
        return "API unavailable"
    # Backpressure first: polls that hit a cap explain a queue that does not drain.
    if by_name["oris_runtime_backpressure_total"].breached:
        return "Sustained backpressure"
    if by_name["oris_runtime_queue_depth"].breached or (stale > 0 and workers == 0):
        return "Queue depth rising, no dispatch"
    if by_name["oris_runtime_terminal_error_rate"].breached:
        return "High terminal error rate"
    if (
        by_name["oris_runtime_lease_conflict_rate"].breached
        or by_name["oris_runtime_recovery_latency_ms"].breached
    ):
        return "Queue depth rising, no dispatch"
    return "none: every signal is within its threshold"


async def _safe(call: Any) -> Any:
    try:
        return await call
    except ApiError as error:
        return {
            "error": {
                "status": error.status,
                "code": error.code,
                "message": error.message,
                "request_id": error.request_id,
            }
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one triage run read from the server."""

    health_status: int
    health: Any
    metrics_first: str
    metrics_second: str
    documents: dict[str, Any]


async def gather(client: OrisClient, sample_seconds: float, audit_window_seconds: int) -> Evidence:
    """Read everything the runbook's triage step asks for (two metric scrapes apart)."""
    health_response = await client.raw("GET", "/healthz")
    try:
        health = health_response.json()
    except ValueError:
        health = {"status": "unreadable", "body": health_response.text[:500]}
    first_text = (await client.raw("GET", "/metrics")).text
    await asyncio.sleep(sample_seconds)
    second_text = (await client.raw("GET", "/metrics")).text
    now_ms = int(time.time() * 1000)
    documents: dict[str, Any] = {
        "jobs.json": await _safe(client.list_jobs(limit=20)),
        "audit.json": await _safe(
            client.audit_logs(from_ms=now_ms - audit_window_seconds * 1000, limit=500)
        ),
        "dlq.json": await _safe(client.list_dlq(limit=100)),
        "workers.json": await _safe(
            client.request("GET", "/v1/workers", params={"window_seconds": 300})
        ),
        "incidents.json": await _safe(client.request("GET", "/v1/incidents")),
    }
    return Evidence(health_response.status_code, health, first_text, second_text, documents)


def summarise(evidence: Evidence, server_url: str, folder: Path) -> dict[str, Any]:
    """The one-screen summary and the playbook the signals point to."""
    health = evidence.health if isinstance(evidence.health, dict) else {}
    first, second = parse_metrics(evidence.metrics_first), parse_metrics(evidence.metrics_second)
    found = signals(first, second)
    health_ok = evidence.health_status == 200
    workers_doc = evidence.documents["workers.json"]
    workers = workers_doc.get("workers", []) if isinstance(workers_doc, dict) else []
    stale = second.get("oris_runtime_stale_leases", 0.0)
    unacked = (
        workers_doc.get("unacked_finished_attempts", []) if isinstance(workers_doc, dict) else []
    )
    return {
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "server_url": server_url,
        "health": {"ok": health_ok, "status_code": evidence.health_status, **health},
        "signals": [_signal_dict(s) for s in found],
        "backpressure_by_reason": {
            reason: second.get(f'oris_runtime_backpressure_total{{reason="{reason}"}}', 0.0)
            - first.get(f'oris_runtime_backpressure_total{{reason="{reason}"}}', 0.0)
            for reason in ("worker_limit", "tenant_limit")
        },
        "workers_seen": [w["worker_id"] for w in workers],
        "stale_leases": stale,
        "table_health": table_health(second),
        "unacked_finished": {
            "count": second.get("oris_runtime_unacked_finished_attempts", 0.0),
            "bound_seconds": workers_doc.get("unacked_finished_bound_seconds")
            if isinstance(workers_doc, dict)
            else None,
            "attempts": [item["attempt_id"] for item in unacked if isinstance(item, dict)],
        },
        "open_incident": health.get("incident"),
        "playbook": playbook(health_ok, health, found, stale, len(workers)),
        "evidence": str(folder),
    }


def _signal_dict(signal: Signal) -> dict[str, Any]:
    return {
        "name": signal.name,
        "value": signal.value,
        "threshold": signal.threshold,
        "breached": signal.breached,
    }


def write_evidence(folder: Path, evidence: Evidence, summary: dict[str, Any]) -> None:
    """The evidence folder with a SHA-256 manifest of every file."""
    folder.mkdir(parents=True, exist_ok=False)
    files: dict[str, str] = {
        "healthz.json": json.dumps(
            {"status_code": evidence.health_status, "body": evidence.health}, indent=2
        ),
        "metrics-1.prom": evidence.metrics_first,
        "metrics-2.prom": evidence.metrics_second,
        "summary.json": json.dumps(summary, indent=2, sort_keys=True),
        **{
            name: json.dumps(doc, indent=2, sort_keys=True)
            for name, doc in evidence.documents.items()
        },
    }
    lines = []
    for name, content in sorted(files.items()):
        data = (content.rstrip("\n") + "\n").encode()
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (folder / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def render(summary: dict[str, Any]) -> str:
    """One screen for a person."""
    health = summary["health"]
    lines = [
        f"Oris triage  {summary['collected_at']}  {summary['server_url']}",
        f"health      {'ok' if health['ok'] else 'FAILING'} ({health.get('status_code')}) "
        f"{health.get('reason', '') or ''}".rstrip(),
        "",
        f"{'signal':<36} {'value':>12}  {'alert threshold':<34} state",
    ]
    for signal in summary["signals"]:
        value = "-" if signal["value"] is None else f"{signal['value']:.6g}"
        state = "BEYOND" if signal["breached"] else "ok"
        lines.append(f"{signal['name']:<36} {value:>12}  {signal['threshold']:<34} {state}")
    by_reason = summary["backpressure_by_reason"]
    lines += [
        "",
        f"backpressure during sample: worker_limit {by_reason['worker_limit']:.0f}, tenant_limit {by_reason['tenant_limit']:.0f}",
        f"workers seen (5 min): {len(summary['workers_seen'])} {' '.join(summary['workers_seen'][:8])}",
        f"leases stuck past expiry: {summary['stale_leases']:.0f}",
        _unacked_line(summary["unacked_finished"]),
        f"open incident: {summary['open_incident']['incident_id'] if summary['open_incident'] else 'none'}",
        *render_table_health(summary["table_health"]),
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
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server-url",
            envvar="ORIS_SERVER_URL",
            help="API base URL.",
            show_default="http://127.0.0.1:8080",
        ),
    ] = None,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", envvar="ORIS_TRIAGE_DIR", help="Where the evidence folder is created."
        ),
    ] = Path("evidence"),
    sample_seconds: Annotated[
        float,
        typer.Option(
            "--sample-seconds", min=0.0, max=60.0, help="Seconds between the two metric scrapes."
        ),
    ] = 2.0,
    audit_window_seconds: Annotated[
        int,
        typer.Option("--audit-window-seconds", min=1, help="How much of the audit log to keep."),
    ] = AUDIT_WINDOW_SECONDS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Collect health, metrics, recent jobs, the audit window and the DLQ; name the playbook."""
    settings = ClientSettings() if server_url is None else ClientSettings(server_url=server_url)
    folder = output_dir / f"triage-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"

    async def go() -> Evidence:
        async with OrisClient(settings) as client:
            return await gather(client, sample_seconds, audit_window_seconds)

    try:
        evidence = asyncio.run(go())
    except ServerUnreachable as error:
        fail(f"server unreachable: {error}", EXIT_UNREACHABLE)
    summary = summarise(evidence, settings.server_url, folder)
    try:
        write_evidence(folder, evidence, summary)
    except FileExistsError:
        fail(f"evidence folder {folder} already exists")
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    else:
        typer.echo(render(summary))
    if not summary["health"]["ok"]:
        raise typer.Exit(EXIT_FAILURE)
