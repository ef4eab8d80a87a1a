"""``oris drill``: reproduce each runbook playbook against real processes."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from oris.cli.output import print_json

if TYPE_CHECKING:
    # The drill catalogue and harness (process control, HTTP client) load when a drill
    # command runs, not when the CLI is built.
    from oris.drills.catalog import Drill
    from oris.drills.harness import DrillConfig

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
    bool,
    typer.Option(
        "--json", help="Print the result as JSON on stdout (progress lines go to stderr)."
    ),
]
ReportOption = Annotated[
    Path | None, typer.Option("--report", help="Also write the drill report(s) to this JSON file.")
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
def list_drills(as_json: JsonOption = False) -> None:
    """Every drill and the playbook it rehearses."""
    from oris.drills.catalog import DRILLS

    if as_json:
        print_json(
            {
                "drills": [
                    {
                        "name": drill.name,
                        "playbook": drill.playbook,
                        "fault": drill.summary,
                        "postgres_only": drill.postgres_only,
                    }
                    for drill in DRILLS.values()
                ]
            }
        )
        return
    for drill in DRILLS.values():
        only = " (PostgreSQL only)" if drill.postgres_only else ""
        typer.echo(f"{drill.name:<36} {drill.playbook}{only}\n{'':<36} fault: {drill.summary}")


def _config(backend: str, dsn: str | None, workdir: Path, keep: bool, as_json: bool) -> DrillConfig:
    from oris.drills.harness import DrillConfig

    backend = backend.strip().lower()
    if backend not in {"sqlite", "postgres"}:
        fail("--backend must be sqlite or postgres", EXIT_USAGE)
    if backend == "postgres" and not dsn:
        fail("--backend postgres needs --dsn (or ORIS_DRILL_POSTGRES_DSN)", EXIT_USAGE)
    # With --json, stdout carries only the JSON document; the progress goes to stderr.
    echo = functools.partial(typer.echo, err=as_json)
    return DrillConfig(backend=backend, dsn=dsn, workdir=workdir, keep=keep, echo=echo)


def _execute(drills: list[Drill], config: DrillConfig) -> list[dict[str, Any]]:
    from oris.drills.catalog import run_drill
    from oris.drills.harness import DrillRun

    reports = []
    for index, drill in enumerate(drills, start=1):
        if drill.postgres_only and config.backend != "postgres":
            config.echo(f"[{index}/{len(drills)}] {drill.name}: skipped (PostgreSQL only)")
            reports.append(
                {"drill": drill.name, "backend": config.backend, "passed": True, "skipped": True}
            )
            continue
        config.echo(
            f"[{index}/{len(drills)}] {drill.name} ({config.backend}) - playbook: {drill.playbook}"
        )
        run = DrillRun(drill.name, config)
        report = asyncio.run(run_drill(drill, run))
        config.echo(run.signal_table())
        config.echo(f"  => {'PASSED' if report['passed'] else 'FAILED'}\n")
        reports.append(report)
    return reports


def _finish(reports: list[dict[str, Any]], report_path: Path | None, as_json: bool) -> None:
    document = json.dumps({"drills": reports}, indent=2, default=str) + "\n"
    if report_path is not None:
        report_path.write_text(document)
    if as_json:
        sys.stdout.write(document)
    failed = [r["drill"] for r in reports if not r["passed"]]
    if failed:
        typer.echo(f"failed drills: {', '.join(failed)}", err=True)
        raise typer.Exit(EXIT_FAILURE)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Drill name (see `oris drill list`).")],
    backend: BackendOption = "sqlite",
    dsn: DsnOption = None,
    report_path: ReportOption = None,
    workdir: WorkdirOption = Path(".drills"),
    keep: KeepOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run one drill; exit 1 if any expectation fails."""
    from oris.drills.catalog import DRILLS

    drill = DRILLS.get(name)
    if drill is None:
        fail(f"unknown drill {name!r}; see `oris drill list`", EXIT_USAGE)
    config = _config(backend, dsn, workdir, keep, as_json)
    _finish(_execute([drill], config), report_path, as_json)


@app.command("all")
def run_all(
    backend: BackendOption = "sqlite",
    dsn: DsnOption = None,
    report_path: ReportOption = None,
    workdir: WorkdirOption = Path(".drills"),
    keep: KeepOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run every drill in turn; exit 1 if any fails."""
    from oris.drills.catalog import DRILLS

    config = _config(backend, dsn, workdir, keep, as_json)
    _finish(_execute(list(DRILLS.values()), config), report_path, as_json)
