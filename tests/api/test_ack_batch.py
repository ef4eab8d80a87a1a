"""``POST /v1/workers/{id}/acks`` on both backends: each item answered as ``/ack`` answers it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import ack, fails, ok, poll, run
from tests.api.test_scheduler import force_expire, runtime_of


async def acks(api: httpx.AsyncClient, worker_id: str, items: list[dict[str, Any]]) -> list[Any]:
    data = await ok(api, "POST", f"/v1/workers/{worker_id}/acks", {"acks": items})
    results: list[Any] = data["results"]
    assert [r["attempt_id"] for r in results] == [i.get("attempt_id") for i in items]
    return results


def completed(lease: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "attempt_id": lease["attempt_id"],
        "lease_id": lease["lease_id"],
        "terminal_status": "completed",
        **fields,
    }


async def test_a_batch_completes_many_jobs_like_single_acks(api: httpx.AsyncClient) -> None:
    for index in range(5):
        await run(api, f"b-{index}", workflow="echo", input={"n": index})
    leases = (await poll(api, "wb", limit=5))["dispatches"]
    assert len(leases) == 5
    results = await acks(api, "wb", [completed(d, output={"n": i}) for i, d in enumerate(leases)])
    assert all(r["ok"] for r in results)
    for index, (lease, result) in enumerate(zip(leases, results, strict=True)):
        assert result["data"]["status"] == "completed"
        assert result["data"]["next_retry_at"] is None
        assert result["data"]["trace"]["parent_span_id"] == lease["trace"]["span_id"]
        job = await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}")
        assert job["status"] == "completed"
        assert job["output"] == {"n": index}
        timeline = await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}/timeline")
        assert [e["event_type"] for e in timeline["timeline"]][-1] == "attempt_completed"
    # Repeating an item is answered from the stored ack, exactly like /ack.
    again = await acks(api, "wb", [completed(leases[0], output={"n": 0})])
    assert again[0] == results[0]
    single = await ack(api, "wb", leases[1]["attempt_id"], output={"n": 1})
    assert single == results[1]["data"]
    # A different outcome for an acked lease is refused.
    changed = await acks(api, "wb", [completed(leases[2], output="other")])
    assert changed[0]["ok"] is False
    assert changed[0]["status"] == 409
    assert changed[0]["error"]["code"] == "conflict"
    assert (await poll(api, "wb"))["worker_active_leases"] == 0


async def test_each_item_gets_its_own_answer(api: httpx.AsyncClient) -> None:
    for index in range(4):
        await run(api, f"m-{index}")
    good, foreign, failing, expired = (await poll(api, "wm", limit=4))["dispatches"]
    await force_expire(runtime_of(api), expired["lease_id"])
    results = await acks(
        api,
        "wm",
        [
            completed(good),
            {**completed(foreign), "lease_id": "lease-not-mine"},
            {
                "attempt_id": failing["attempt_id"],
                "terminal_status": "failed",
                "error": {"message": "boom", "retryable": False},
            },
            completed(expired),
            {"attempt_id": "attempt-nope", "terminal_status": "completed"},
            {"attempt_id": good["attempt_id"], "terminal_status": "done"},
        ],
    )
    assert [r["ok"] for r in results] == [True, False, True, False, False, False]
    assert [r.get("status") for r in results] == [None, 409, None, 409, 404, 400]
    assert results[2]["data"]["status"] == "failed"
    assert results[3]["error"]["message"] == "lease expired"
    assert (await ok(api, "GET", f"/v1/jobs/{good['thread_id']}"))["status"] == "completed"
    assert (await ok(api, "GET", f"/v1/jobs/{foreign['thread_id']}"))["status"] == "running"
    assert (await ok(api, "GET", f"/v1/jobs/{failing['thread_id']}"))["status"] == "failed"
    dead = await ok(api, "GET", f"/v1/dlq/{failing['attempt_id']}")
    assert dead["attempt_id"] == failing["attempt_id"]
    # The foreign item changed nothing: its owner can still ack it.
    owned = await acks(api, "wm", [completed(foreign)])
    assert owned[0]["ok"] is True


async def test_batch_size_and_body_are_validated(api: httpx.AsyncClient) -> None:
    empty = await fails(api, "POST", "/v1/workers/w/acks", 400, {"acks": []})
    assert "between 1 and 100" in empty["message"]
    item = {"attempt_id": "a", "terminal_status": "completed"}
    await fails(api, "POST", "/v1/workers/w/acks", 400, {"acks": [item] * 101})
    await fails(api, "POST", "/v1/workers/w/acks", 400, {"acks": "nope"})
    await fails(api, "POST", "/v1/workers/w/acks", 400, {})
    await fails(api, "POST", "/v1/workers/%20/acks", 400, {"acks": [item]})


async def test_a_poll_carries_acks_and_their_leases_stop_counting(api: httpx.AsyncClient) -> None:
    for index in range(4):
        await run(api, f"c-{index}", workflow="echo", input={"n": index})
    first = (await poll(api, "wc", limit=2, max_active_leases=2))["dispatches"]
    assert len(first) == 2
    full = await poll(api, "wc", limit=2, max_active_leases=2)
    assert full["decision"] == "backpressure"
    assert "acks" not in full
    # Both acks are applied before the claim: the cap of 2 has room for the next two jobs.
    data = await poll(
        api,
        "wc",
        limit=2,
        max_active_leases=2,
        acks=[completed(d, output={"done": d["thread_id"]}) for d in first],
    )
    assert data["decision"] == "dispatched"
    assert len(data["dispatches"]) == 2
    assert [r["attempt_id"] for r in data["acks"]] == [d["attempt_id"] for d in first]
    assert all(r["ok"] and r["data"]["status"] == "completed" for r in data["acks"])
    for lease in first:
        job = await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}")
        assert job["status"] == "completed"
        assert job["output"] == {"done": lease["thread_id"]}
    # Each item is answered as /acks answers it: a repeat from the stored ack, a foreign
    # lease refused on its own, and the poll still runs.
    second = data["dispatches"]
    mixed = await poll(
        api,
        "wc",
        acks=[
            completed(first[0], output={"done": first[0]["thread_id"]}),
            {**completed(second[0]), "lease_id": "lease-not-mine"},
            completed(second[1]),
        ],
    )
    assert [r["ok"] for r in mixed["acks"]] == [True, False, True]
    assert mixed["acks"][0] == data["acks"][0]
    assert mixed["acks"][1]["status"] == 409
    assert mixed["decision"] == "noop"
    assert mixed["worker_active_leases"] == 1
    assert (await poll(api, "wc", acks=[]))["acks"] == []


async def test_a_refused_poll_applies_none_of_its_acks(api: httpx.AsyncClient) -> None:
    await run(api, "r-0")
    (lease,) = (await poll(api, "wr"))["dispatches"]
    refused: list[dict[str, Any]] = [
        {"wait_ms": -1},
        {"workflows": []},
        {"limit": -1},
        {"acks": "nope"},
    ]
    for bad in refused:
        await fails(
            api,
            "POST",
            "/v1/workers/poll",
            400,
            {"worker_id": "wr", "acks": [completed(lease)], **bad},
        )
    await fails(
        api,
        "POST",
        "/v1/workers/poll",
        400,
        {"worker_id": "wr", "acks": [completed(lease)] * 101},
    )
    assert (await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}"))["status"] == "running"
    carried = await poll(api, "wr", acks=[completed(lease)])
    assert carried["acks"][0]["ok"] is True
    assert (await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}"))["status"] == "completed"


async def test_failed_acks_in_a_poll_free_their_slots_before_the_claim(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "f-0")
    await run(api, "f-1")
    (lease,) = (await poll(api, "wf", max_active_leases=1))["dispatches"]
    failed = {
        "attempt_id": lease["attempt_id"],
        "lease_id": lease["lease_id"],
        "terminal_status": "failed",
        "error": {"message": "boom", "retryable": False},
    }
    # A failure takes the single-ack path before the claim, which then has room again.
    data = await poll(api, "wf", max_active_leases=1, acks=[failed])
    assert data["acks"][0]["ok"] is True
    assert data["acks"][0]["data"]["status"] == "failed"
    assert data["decision"] == "dispatched"
    assert data["dispatches"][0]["thread_id"] != lease["thread_id"]
    assert (await ok(api, "GET", f"/v1/jobs/{lease['thread_id']}"))["status"] == "failed"
    # A long poll carrying acks applies them before it waits.
    (second,) = data["dispatches"]
    waited = await poll(api, "wf", wait_ms=50, acks=[completed(second)])
    assert waited["acks"][0]["data"]["status"] == "completed"
    assert waited["decision"] == "noop"
    assert waited["worker_active_leases"] == 0
