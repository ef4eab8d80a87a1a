"""Filtered lists and keyset cursors for jobs, the DLQ and the audit log, on both backends."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import jsonschema

from tests.api.helpers import ack, fails, ok, poll, run
from tests.api.test_contract import _contract, _schema_for


async def _pages(
    api: httpx.AsyncClient, path: str, key: str, params: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        data = await ok(api, "GET", path, params=query)
        pages.append(data[key])
        cursor = data["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 200, "paging did not end"


async def test_cursor_paging_returns_every_job_once_while_jobs_are_inserted(
    api: httpx.AsyncClient,
) -> None:
    existing = [f"job-{index:03d}" for index in range(45)]
    for thread_id in existing:
        await run(api, thread_id)
    inserting = True
    inserted: list[str] = []

    async def insert() -> None:
        while inserting:
            thread_id = f"new-{len(inserted):03d}"
            await run(api, thread_id)
            inserted.append(thread_id)
            await asyncio.sleep(0)

    for order in ("created", "updated"):
        inserter = asyncio.create_task(insert())
        try:
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                params: dict[str, Any] = {"limit": 4, "order": order}
                if cursor is not None:
                    params["cursor"] = cursor
                data = await ok(api, "GET", "/v1/jobs", params=params)
                assert data["order"] == order
                assert (data["total"] is None) == (cursor is not None)
                seen.extend(job["thread_id"] for job in data["jobs"])
                pages += 1
                # Let the inserter add jobs between pages (it runs between every await).
                before = len(inserted)
                while len(inserted) == before:
                    await asyncio.sleep(0)
                cursor = data["next_cursor"]
                if cursor is None:
                    break
                assert pages < 100, "paging did not end"
        finally:
            inserting = False
            await inserter
        inserting = True
        assert len(seen) == len(set(seen)), "a job was returned twice"
        assert set(existing) <= set(seen), sorted(set(existing) - set(seen))
        assert pages >= len(existing) // 4
        assert len(inserted) >= pages


async def test_job_filters_combine_and_keep_offset_paging(api: httpx.AsyncClient) -> None:
    for index in range(6):
        await run(
            api,
            f"f-{index}",
            workflow="etl" if index % 2 else "report",
            tenant_id="acme" if index < 3 else "globex",
        )
    etl = await ok(api, "GET", "/v1/jobs", params={"workflow": "etl"})
    assert sorted(j["thread_id"] for j in etl["jobs"]) == ["f-1", "f-3", "f-5"]
    assert etl["total"] == 3
    both = await ok(api, "GET", "/v1/jobs", params={"workflow": "etl", "tenant_id": "acme"})
    assert [j["thread_id"] for j in both["jobs"]] == ["f-1"]
    lease = await poll(api, workflows=["report"])
    await ack(api, "w1", lease["attempt_id"])
    done = await ok(api, "GET", "/v1/jobs", params={"status": "completed", "workflow": "report"})
    assert [j["thread_id"] for j in done["jobs"]] == [lease["thread_id"]]

    newest = await ok(api, "GET", "/v1/jobs", params={"order": "created", "limit": 1})
    created = newest["jobs"][0]["created_at"]
    before = await ok(api, "GET", "/v1/jobs", params={"created_before": created})
    assert newest["jobs"][0]["thread_id"] not in {j["thread_id"] for j in before["jobs"]}
    after = await ok(api, "GET", "/v1/jobs", params={"created_after": "1970-01-01T00:00:00Z"})
    assert after["total"] == 6
    as_ms = await ok(api, "GET", "/v1/jobs", params={"created_after": "0", "tenant_id": "acme"})
    assert as_ms["total"] == 3

    # Upstream's offset paging still works, and a page answers its cursor too.
    first = await ok(api, "GET", "/v1/jobs", params={"limit": 2, "order": "created"})
    second = await ok(api, "GET", "/v1/jobs", params={"limit": 2, "offset": 2, "order": "created"})
    by_cursor = await ok(
        api, "GET", "/v1/jobs", params={"cursor": first["next_cursor"], "limit": 2}
    )
    assert [j["thread_id"] for j in second["jobs"]] == [j["thread_id"] for j in by_cursor["jobs"]]
    assert second["offset"] == 2 and second["total"] == 6
    last = await ok(api, "GET", "/v1/jobs", params={"limit": 6})
    assert last["next_cursor"] is None


async def test_bad_cursors_and_filters_are_400(api: httpx.AsyncClient) -> None:
    await run(api, "only-1")
    await run(api, "only-2")
    page = await ok(api, "GET", "/v1/jobs", params={"limit": 1})
    good = page["next_cursor"]
    assert good
    forged = base64.urlsafe_b64encode(json.dumps({"v": 1, "k": "jobs"}).encode()).decode()
    wrong_types = base64.urlsafe_b64encode(
        json.dumps({"v": 1, "k": "jobs", "o": "updated", "f": "x", "p": ["a", 1]}).encode()
    ).decode()
    for cursor in ("not-a-cursor!", "e30", forged, wrong_types, "A" * 5000, "%00"):
        error = await fails(api, "GET", "/v1/jobs", 400, params={"cursor": cursor})
        assert error["code"] == "invalid_argument", cursor
    error = await fails(api, "GET", "/v1/jobs", 400, params={"cursor": good, "workflow": "x"})
    assert "different filters" in error["message"]
    await fails(api, "GET", "/v1/jobs", 400, params={"cursor": good, "order": "created"})
    await fails(api, "GET", "/v1/jobs", 400, params={"cursor": good, "offset": 1})
    await fails(api, "GET", "/v1/dlq", 400, params={"cursor": good})
    await fails(api, "GET", "/v1/audit/logs", 400, params={"cursor": good})
    await fails(api, "GET", "/v1/jobs", 400, params={"order": "priority"})
    await fails(api, "GET", "/v1/jobs", 400, params={"created_after": "soon"})
    await fails(api, "GET", "/v1/jobs", 400, params={"created_after": "9" * 30})
    await fails(api, "GET", "/v1/jobs", 400, params={"workflow": "bad id!"})
    await fails(api, "GET", "/v1/jobs", 400, params={"tenant_id": "x\x00y"})
    await fails(api, "GET", "/v1/dlq", 400, params={"status": "bogus"})
    await fails(api, "GET", "/v1/dlq", 400, params={"cursor": "%%%"})


async def test_dlq_filters_and_cursor(api: httpx.AsyncClient) -> None:
    attempts: list[str] = []
    for index in range(5):
        workflow = "pay" if index != 2 else "mail"
        await run(api, f"d-{index}", workflow=workflow, tenant_id="acme" if index else "globex")
        lease = await poll(api, workflows=[workflow])
        await ack(api, "w1", lease["attempt_id"], status="failed")
        attempts.append(lease["attempt_id"])
    pages = await _pages(api, "/v1/dlq", "entries", {"limit": 2, "workflow": "pay"})
    listed = [entry["attempt_id"] for page in pages for entry in page]
    assert sorted(listed) == sorted(a for i, a in enumerate(attempts) if i != 2)
    assert len(listed) == len(set(listed))
    assert [len(page) for page in pages] == [2, 2]
    tenant = await ok(api, "GET", "/v1/dlq", params={"tenant_id": "globex"})
    assert [e["attempt_id"] for e in tenant["entries"]] == [attempts[0]]
    assert tenant["next_cursor"] is None
    none = await ok(api, "GET", "/v1/dlq", params={"created_after": "2999-01-01T00:00:00Z"})
    assert none["entries"] == []


async def test_audit_log_cursor_pages_without_gaps(api: httpx.AsyncClient) -> None:
    for index in range(7):
        await run(api, f"a-{index}")
    pages = await _pages(api, "/v1/audit/logs", "logs", {"limit": 3, "action": "job.run"})
    ids = [row["audit_id"] for page in pages for row in page]
    assert len(ids) == 7 and ids == sorted(ids, reverse=True)
    error = await fails(
        api,
        "GET",
        "/v1/audit/logs",
        400,
        params={"cursor": "bogus", "action": "job.run"},
    )
    assert error["code"] == "invalid_argument"


async def test_filtered_and_cursor_pages_still_match_the_contract(api: httpx.AsyncClient) -> None:
    contract = _contract()
    for index in range(3):
        await run(api, f"c-{index}", workflow="pay", tenant_id="acme")
        lease = await poll(api, workflows=["pay"])
        await ack(api, "w1", lease["attempt_id"], status="failed")
    cases: list[tuple[str, str, dict[str, str | int]]] = [
        ("/v1/jobs", "/v1/jobs", {"workflow": "pay", "tenant_id": "acme", "limit": 1}),
        ("/v1/jobs", "/v1/jobs", {"order": "created", "limit": 1}),
        ("/v1/dlq", "/v1/dlq", {"workflow": "pay", "limit": 1}),
        ("/v1/audit/logs", "/v1/audit/logs", {"action": "job.run", "limit": 1}),
    ]
    for path, template, params in cases:
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        jsonschema.validate(response.json(), _schema_for(contract, "GET", template))
        cursor = response.json()["data"]["next_cursor"]
        assert cursor, path
        following = await api.get(path, params={**params, "cursor": cursor})
        assert following.status_code == 200, following.text
        jsonschema.validate(following.json(), _schema_for(contract, "GET", template))
