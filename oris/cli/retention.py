"""``oris jobs purge`` and ``oris audit archive``: delete old history, optionally keeping it in
a JSON-lines file that is written (and synced to disk) before anything is deleted.

Both talk to the API only. Each request is one batch, one transaction and one audit row on the
server; the commands loop until nothing is left.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from oris.cli.errors import EXIT_FAILURE
from oris.cli.operator import api_command, attach_group
from oris.domain.clock import now_ms, to_rfc3339

jobs_app = typer.Typer(help="Run, inspect and steer jobs.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

if TYPE_CHECKING:
    from oris.client.http import OrisClient


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or plain seconds, as whole seconds."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration such as 7d, 12h, 30m or 3600")
    return int(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_moment(text: str) -> int:
    """An ISO 8601 date or date-time (UTC unless it says otherwise), or a duration meaning
    that long ago; epoch milliseconds."""
    try:
        return now_ms() - parse_duration(text) * 1000
    except typer.BadParameter:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a date-time (2026-01-31 or 2026-01-31T12:00:00Z) "
            "nor a duration ago (90d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def append_lines(handle: IO[str], lines: list[Mapping[str, Any]]) -> None:
    """Write one JSON object per line and make sure it reached the disk."""
    for line in lines:
        handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


# --- oris jobs purge ---------------------------------------------------------------------------


class PurgeStatus(StrEnum):
    """Statuses a purge may delete (live work never is)."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


def render_purge(data: Mapping[str, Any]) -> None:
    """Print what the purge did (or would do)."""
    if data["dry_run"]:
        print(
            f"dry run: {data['matched']} {data['status']} jobs finished before {data['cutoff']} "
            "would be purged; nothing was changed"
        )
        shown = data.get("thread_ids") or []
        if shown:
            more = f" (first {len(shown)})" if data["matched"] > len(shown) else ""
            print(f"thread ids{more}: {' '.join(shown[:20])}{' …' if len(shown) > 20 else ''}")
        return
    archived = f", {data['archived']} archived to {data['archive']}" if data.get("archive") else ""
    print(
        f"purged {data['purged']} {data['status']} jobs finished before {data['cutoff']} "
        f"in {data['batches']} batches{archived}"
    )
    if data.get("archived_not_purged"):
        print(
            f"{data['archived_not_purged']} archived jobs changed before they could be purged "
            "and were kept (their lines stay in the archive)"
        )


@api_command(jobs_app, "purge", render=render_purge)
async def jobs_purge(
    client: OrisClient,
    status: Annotated[PurgeStatus, typer.Option("--status", help="Which finished jobs.")],
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Only jobs that finished longer ago than this: 7d, 12h, 30m or seconds.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and name the jobs; change nothing.")
    ] = False,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            help="Append each job with all its rows to this file as one JSON line before "
            "deleting it.",
            dir_okay=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1000, help="Jobs per request.")
    ] = 500,
) -> Any:
    """Delete finished jobs older than a cut-off with all their rows (admin only)."""
    seconds = parse_duration(older_than)
    body: dict[str, Any] = {
        "status": status.value,
        "older_than_seconds": seconds,
        "limit": batch_size,
    }
    if dry_run:
        if archive is not None:
            raise typer.BadParameter(
                "an archive holds what is deleted; drop --dry-run to archive",
                param_hint="'--archive'",
            )
        return await client.request("POST", "/v1/jobs/purge", json={**body, "dry_run": True})
    purged = archived = batches = kept = 0
    cutoff = to_rfc3339(now_ms() - seconds * 1000)
    handle = None if archive is None else archive.open("a", encoding="utf-8")
    try:
        while True:
            batches += 1
            if handle is None:
                result = await client.request("POST", "/v1/jobs/purge", json=body)
                purged += int(result["count"])
                cutoff = result["cutoff"]
                if not result["more"]:
                    break
                continue
            preview = await client.request(
                "POST", "/v1/jobs/purge", json={**body, "dry_run": True, "include_rows": True}
            )
            if not preview["jobs"]:
                break
            append_lines(handle, preview["jobs"])
            archived += len(preview["jobs"])
            chosen = [line["thread_id"] for line in preview["jobs"]]
            result = await client.request(
                "POST", "/v1/jobs/purge", json={**body, "thread_ids": chosen}
            )
            purged += int(result["count"])
            kept += len(chosen) - int(result["count"])
            cutoff = result["cutoff"]
            if not result["count"]:
                break  # nothing left that can be purged: the rest keeps changing
    finally:
        if handle is not None:
            handle.close()
    return {
        "dry_run": False,
        "status": status.value,
        "older_than_seconds": seconds,
        "cutoff": cutoff,
        "purged": purged,
        "batches": batches,
        "archive": None if archive is None else str(archive),
        "archived": archived,
        "archived_not_purged": kept,
    }


# --- oris audit archive ------------------------------------------------------------------------


def render_audit_archive(data: Mapping[str, Any]) -> None:
    """Print how much of the chain was archived and where it now starts."""
    anchor = data.get("anchor") or {}
    if data["dry_run"]:
        print(
            f"dry run: {data['count']} audit rows written before {data['before']} would be "
            f"archived{' (and more)' if data.get('more') else ''}; nothing was changed"
        )
        return
    print(
        f"archived {data['archived']} audit rows to {data['out']}; the chain now starts after "
        f"audit_id {anchor.get('last_audit_id')} (hash {anchor.get('last_row_hash')})"
    )


@api_command(audit_app, "archive", render=render_audit_archive)
async def audit_archive(
    client: OrisClient,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Archive rows written before this date-time (2026-01-31T00:00:00Z) or this "
            "long ago (90d).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Append the rows here, one JSON line each, before they are removed.",
            dir_okay=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the rows; change nothing.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=5000, help="Rows per request.")
    ] = 1000,
) -> Any:
    """Move the oldest audit rows to a file; what remains still verifies (admin only).

    The file verifies on its own with `oris audit verify --file FILE`."""
    before_ms = parse_moment(before)
    body: dict[str, Any] = {"before_ms": before_ms, "limit": batch_size}
    if dry_run:
        return await client.request("POST", "/v1/audit/archive", json={**body, "dry_run": True})
    if out is None:
        raise typer.BadParameter("name the archive file", param_hint="'--out'")
    archived = 0
    anchor: Any = None
    with out.open("a", encoding="utf-8") as handle:
        while True:
            preview = await client.request(
                "POST", "/v1/audit/archive", json={**body, "dry_run": True}
            )
            rows = preview["rows"]
            anchor = preview["anchor"]
            if not rows:
                break
            # Never delete rows that would not verify from the file alone.
            from oris.domain.audit_chain import check_segment

            check = check_segment(rows, preview["anchor"]["last_row_hash"])
            if not check.ok:
                print(
                    f"oris: the audit chain is broken at audit_id {check.first_bad_audit_id} "
                    f"({check.problem}); nothing more was archived",
                    file=sys.stderr,
                )
                raise typer.Exit(EXIT_FAILURE)
            append_lines(handle, rows)
            last = rows[-1]
            result = await client.request(
                "POST",
                "/v1/audit/archive",
                json={
                    **body,
                    "through_audit_id": last["audit_id"],
                    "through_row_hash": last["row_hash"],
                },
            )
            archived += int(result["archived"])
            anchor = result["anchor"]
            if not preview["more"]:
                break
    return {"dry_run": False, "archived": archived, "out": str(out), "anchor": anchor}


def register(app: typer.Typer) -> None:
    """Add ``oris jobs purge`` and ``oris audit archive`` to their groups."""
    attach_group(app, "jobs", jobs_app)
    attach_group(app, "audit", audit_app)
