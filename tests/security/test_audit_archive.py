"""Archiving the oldest part of the audit chain keeps what remains verifiable, on both backends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from sqlalchemy import func, select, update

from oris.domain.audit_chain import check_segment
from oris.domain.clock import now_ms
from oris.services import audit
from oris.store.tables import audit_logs
from tests.api.helpers import fails, ok, run
from tests.api.test_scheduler import runtime_of


async def _count(api: httpx.AsyncClient) -> int:
    async with runtime_of(api).db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(audit_logs))).scalar_one())


async def test_archived_rows_leave_a_chain_that_verifies_and_a_file_that_verifies_alone(
    api: httpx.AsyncClient,
) -> None:
    for index in range(6):
        await run(api, f"a-{index}")
    cut = now_ms() + 1
    await asyncio.sleep(0.01)
    for index in range(3):
        await run(api, f"b-{index}")
    preview = await ok(
        api, "POST", "/v1/audit/archive", {"before_ms": cut, "dry_run": True, "limit": 4}
    )
    assert preview["count"] == 4 and preview["more"] is True
    assert preview["anchor"]["last_audit_id"] == 0
    assert await _count(api) == 9, "a dry run changes nothing"

    archived: list[dict[str, Any]] = []
    anchor_hash = None
    while True:
        page = await ok(
            api, "POST", "/v1/audit/archive", {"before_ms": cut, "dry_run": True, "limit": 4}
        )
        if not page["rows"]:
            break
        # What a file holds reloads as JSON and still hashes the same.
        rows = [json.loads(json.dumps(row, ensure_ascii=False)) for row in page["rows"]]
        assert check_segment(rows, page["anchor"]["last_row_hash"]).ok
        archived += rows
        done = await ok(
            api,
            "POST",
            "/v1/audit/archive",
            {
                "before_ms": cut,
                "through_audit_id": rows[-1]["audit_id"],
                "through_row_hash": rows[-1]["row_hash"],
            },
        )
        anchor_hash = done["anchor"]["last_row_hash"]
        assert done["anchor"]["last_audit_id"] == rows[-1]["audit_id"]
    assert [row["resource_id"] for row in archived] == [f"a-{index}" for index in range(6)]
    alone = check_segment(archived)
    assert alone.ok and alone.starts_after_hash is None and alone.rows_checked == 6
    assert alone.last_row_hash == anchor_hash

    report = await ok(api, "GET", "/v1/audit/verify")
    assert report["ok"] is True
    assert report["anchor"]["last_audit_id"] == archived[-1]["audit_id"]
    assert report["anchor"]["archived_rows"] == 6
    # 3 later submits and one audit.archive row per archived batch remain.
    assert report["rows_checked"] == 3 + 2
    actions = [row["action"] for row in (await ok(api, "GET", "/v1/audit/logs"))["logs"]]
    assert actions.count("audit.archive") == 2

    # New rows keep linking to what remains.
    await run(api, "c-0")
    assert (await ok(api, "GET", "/v1/audit/verify"))["ok"] is True

    # Altering an archived row is caught by the file check; a remaining row by the server's.
    tampered = [dict(row) for row in archived]
    tampered[2]["resource_id"] = "forged"
    assert check_segment(tampered).first_bad_audit_id == archived[2]["audit_id"]
    rt = runtime_of(api)
    remaining = (await ok(api, "GET", "/v1/audit/logs"))["logs"]
    victim = min(row["audit_id"] for row in remaining)
    async with rt.db.write() as conn:
        await conn.execute(
            update(audit_logs).where(audit_logs.c.audit_id == victim).values(action="forged")
        )
    broken = await audit.verify_chain(rt.db)
    assert (broken.ok, broken.first_bad_audit_id) == (False, victim)


async def test_archive_refuses_a_cut_off_past_the_last_representable_instant(
    api: httpx.AsyncClient,
) -> None:
    for before_ms in (253_402_300_800_000, 2**63 - 1):
        error = await fails(
            api, "POST", "/v1/audit/archive", 400, {"before_ms": before_ms, "dry_run": True}
        )
        assert error["code"] == "invalid_argument"


async def test_archive_refuses_what_it_cannot_prove(api: httpx.AsyncClient) -> None:
    for index in range(4):
        await run(api, f"r-{index}")
    later = now_ms() + 60_000
    page = await ok(api, "POST", "/v1/audit/archive", {"before_ms": later, "dry_run": True})
    # The head (newest row) never leaves: the next row needs it to link to.
    assert page["count"] == 3
    logs = (await ok(api, "GET", "/v1/audit/logs"))["logs"]
    head = max(row["audit_id"] for row in logs)
    head_hash = next(row["row_hash"] for row in logs if row["audit_id"] == head)
    body = {"before_ms": later}
    error = await fails(
        api,
        "POST",
        "/v1/audit/archive",
        409,
        {**body, "through_audit_id": head, "through_row_hash": head_hash},
    )
    assert "newest" in error["message"]
    second = page["rows"][1]
    wrong_hash = await fails(
        api,
        "POST",
        "/v1/audit/archive",
        409,
        {**body, "through_audit_id": second["audit_id"], "through_row_hash": "0" * 64},
    )
    assert "row hash" in wrong_hash["message"]
    too_late = await fails(
        api,
        "POST",
        "/v1/audit/archive",
        400,
        {
            "before_ms": second["created_at_ms"],
            "through_audit_id": second["audit_id"],
            "through_row_hash": second["row_hash"],
        },
    )
    assert "cut-off" in too_late["message"]
    await fails(api, "POST", "/v1/audit/archive", 400, body)
    await fails(api, "POST", "/v1/audit/archive", 400, {**body, "through_row_hash": "xyz"})
    unchanged = await ok(api, "GET", "/v1/audit/verify")
    assert unchanged["anchor"]["last_audit_id"] == 0, "a refusal archives nothing"
    assert unchanged["rows_checked"] == 4 + 5, "each refusal is recorded"
    await ok(
        api,
        "POST",
        "/v1/audit/archive",
        {**body, "through_audit_id": second["audit_id"], "through_row_hash": second["row_hash"]},
    )
    again = await fails(
        api,
        "POST",
        "/v1/audit/archive",
        409,
        {**body, "through_audit_id": second["audit_id"], "through_row_hash": second["row_hash"]},
    )
    assert "already archived" in again["message"]
    assert (await ok(api, "GET", "/v1/audit/verify"))["ok"] is True
