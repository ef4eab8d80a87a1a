"""``oris drill``: reproduce each runbook playbook against real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from oris.drills.catalog import DRILLS, Drill, run_drill
from oris.drills.harness import DrillConfig, DrillRun

app = typer.Typer(
    help="Incident drills: inject a fault, watch the signals, mitigate, validate.",
    no_args_is_help=True,
)

BackendOption = Annotated[
    str, typer.Option("--backend", envvar="ORIS_DRILL_BACKEND", help="sqlite or postgres.")
]
DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="ORIS_DRILL_POSTGRES_DSN",
        help="PostgreSQL DSN (each drill uses a scratch schema).",
    ),
]
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Write the drill report(s) to this JSON file.")
]
WorkdirOption = Annotated[
    Path,
    typer.Option(
        "--workdir", envvar="ORIS_DRILL_WORKDIR", help="Scratch folder for databases and logs."
    ),
]
KeepOption = Annotated[
    bool, typer.Option("--keep", help="Keep each drill's scratch folder and logs.")
]


@app.command("list")
def list_drills() -> None:
    """Every drill and the playbook it rehearses."""
    for drill in DRILLS.values():
        only = " (PostgreSQL only)" if drill.postgres_only else ""
        typer.echo(f"{drill.name:<36} {drill.playbook}{only}\n{'':<36} fault: {drill.summary}")


def _config(backend: str, dsn: str | None, workdir: Path, keep: bool) -> DrillConfig:
    backend = backend.strip().lower()
    if backend not in {"sqlite", "postgres"}:
        fail("--backend must be sqlite or postgres", EXIT_USAGE)
    if backend == "postgres" and not dsn:
        fail("--backend postgres needs --dsn (or ORIS_DRILL_POSTGRES_DSN)", EXIT_USAGE)
    return DrillConfig(backend=backend, dsn=dsn, workdir=workdir, keep=keep, echo=typer.echo)


def _execute(drills: list[Drill], config: DrillConfig) -> list[dict[str, Any]]:
    reports = []
    for index, drill in enumerate(drills, start=1):
        if drill.postgres_only and config.backend != "postgres":
            typer.echo(f"[{index}/{len(drills)}] {drill.name}: skipped (PostgreSQL only)")
            reports.append(
                {"drill": drill.name, "backend": config.backend, "passed": True, "skipped": True}
            )
            continue
        typer.echo(
            f"[{index}/{len(drills)}] {drill.name} ({config.backend}) - playbook: {drill.playbook}"
        )
        run = DrillRun(drill.name, config)
        report = asyncio.run(run_drill(drill, run))
        typer.echo(run.signal_table())
        typer.echo(f"  => {'PASSED' if report['passed'] else 'FAILED'}\n")
        reports.append(report)
    return reports


def _finish(reports: list[dict[str, Any]], json_path: Path | None) -> None:
    if json_path is not None:
        json_path.write_text(json.dumps({"drills": reports}, indent=2, default=str) + "\n")
    failed = [r["drill"] for r in reports if not r["passed"]]
    if failed:
        typer.echo(f"failed drills: {', '.join(failed)}", err=True)
        raise typer.Exit(EXIT_FAILURE)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Drill name (see `oris drill list`).")],
    backend: BackendOption = "sqlite",
    dsn: DsnOption = None,
    json_path: JsonOption = None,
    workdir: WorkdirOption = Path(".drills"),
    keep: KeepOption = False,
) -> None:
    """Run one drill; exit 1 if any expectation fails."""
    drill = DRILLS.get(name)
    if drill is None:
        fail(f"unknown drill {name!r}; see `oris drill list`", EXIT_USAGE)
    config = _config(backend, dsn, workdir, keep)
    _finish(_execute([drill], config), json_path)


@app.command("all")
def run_all(
    backend: BackendOption = "sqlite",
    dsn: DsnOption = None,
    json_path: JsonOption = None,
    workdir: WorkdirOption = Path(".drills"),
    keep: KeepOption = False,
) -> None:
    """Run every drill in turn; exit 1 if any fails."""
    config = _config(backend, dsn, workdir, keep)
    _finish(_execute(list(DRILLS.values()), config), json_path)
