"""The docs only name endpoints, metrics and commands that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families

from oris.api.app import create_app
from oris.cli.main import app as cli_app
from oris.config import load_server_settings
from oris.observability.metrics import DatabaseGauges, RuntimeMetrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PATH = re.compile(r"(/v1/[A-Za-z0-9_\-./{}<>:$*]*|/healthz|/metrics)")
METRIC = re.compile(r"\boris_runtime_[a-z_]+")
# A command starts a code line or an inline code span (``ruff check oris tests`` is no command).
COMMAND = re.compile(r"(?:^[ \t]*(?:\$ )?|`)oris ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", re.MULTILINE)
PLACEHOLDER = re.compile(r"^(\{.*\}|<.*>|:.*|\$.*|\.\.\.|…)$")


def _templates() -> list[list[str]]:
    app = create_app(load_server_settings(), run_maintenance=False)
    paths = {*app.openapi()["paths"], "/healthz", "/metrics"}
    return [p.strip("/").split("/") for p in paths]


def _matches(doc_path: str, templates: list[list[str]]) -> bool:
    wildcard = doc_path.endswith("*")
    segments = doc_path.rstrip("*").rstrip("/").strip("/").split("/")
    for template in templates:
        if len(template) < len(segments) or (not wildcard and len(template) != len(segments)):
            continue
        ok = True
        for index, segment in enumerate(segments):
            expected = template[index]
            last_partial = wildcard and index == len(segments) - 1
            if expected.startswith("{") or PLACEHOLDER.match(segment):
                continue
            if segment == expected or (last_partial and expected.startswith(segment)):
                continue
            ok = False
            break
        if ok:
            return True
    return False


def _exported_families() -> set[str]:
    metrics = RuntimeMetrics()
    metrics.http_request("GET", "/v1/jobs", 200, 0.01)
    gauges = DatabaseGauges(
        queue_depth=0,
        dlq_depth={},
        attempts_by_status={"queued": 1},
        interrupts_pending=0,
        active_leases_by_worker={"w": 1},
        active_leases_by_tenant={"t": 1},
        stale_leases=0,
        table_dead_tuples={"runtime_attempts": 0},
        oldest_transaction_age_seconds=0.0,
        table_size_bytes={"runtime_jobs": 8192},
        database_size_bytes=8192,
    )
    names = set()
    for family in text_string_to_metric_families(metrics.render(gauges)):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_endpoints_metrics_and_commands_named_in_docs_exist(doc: Path) -> None:
    text = doc.read_text()
    templates = _templates()
    bad_paths = sorted(
        {
            raw
            for raw in (m.rstrip(".,;:)`'\"") for m in PATH.findall(text))
            if not _matches(raw.split("?")[0], templates)
        }
    )
    exported = _exported_families()
    bad_metrics = sorted(
        {m for m in METRIC.findall(text) if m not in exported and f"{m}_total" not in exported}
    )
    # Typer may ship its own click; go by the group interface rather than the class.
    commands: dict[str, Any] = typer.main.get_command(cli_app).commands  # type: ignore[attr-defined]
    bad_commands = []
    for first, second in COMMAND.findall(text):
        command = commands.get(first)
        if command is None:
            bad_commands.append(f"oris {first}")
            continue
        children = getattr(command, "commands", None)
        if children is not None and second and second not in children:
            bad_commands.append(f"oris {first} {second}")
    assert (bad_paths, bad_metrics, sorted(set(bad_commands))) == ([], [], [])
