"""An attempt starts from the state of its own lineage, and a job shows its current attempt's.

The tests play the worker over the HTTP protocol (poll, report-step, ack) the way the built-in
``approval`` workflow runs: a ``draft`` step, then one interrupt whose answer is recorded as
the step ``interrupt:1``. Both backends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.api.helpers import ack, ok, poll, run

WORKER = "w-approval"


async def _play_approval(api: httpx.AsyncClient) -> dict[str, Any]:
    """Poll one approval attempt and run it as the built-in workflow does; return the ack."""
    dispatch = await poll(api, WORKER, workflows=["approval"])
    assert dispatch["decision"] == "dispatched", dispatch
    attempt_id = dispatch["attempt_id"]
    state: dict[str, Any] = dict(dispatch["checkpoint"]["state"])
    steps: dict[str, Any] = dict(state.get("steps", {}))

    async def record(name: str, value: Any) -> None:
        steps[name] = value
        await ok(
            api,
            "POST",
            f"/v1/workers/{WORKER}/report-step",
            {
                "attempt_id": attempt_id,
                "action_id": name,
                "status": "completed",
                "dedupe_token": f"{attempt_id}:{name}",
                "checkpoint": {"step": name, "state": {**state, "steps": dict(steps)}},
            },
        )

    if "draft" not in steps:
        await record("draft", {"draft": dispatch["input"]})
    if "interrupt:1" in steps:
        answer = steps["interrupt:1"]
    elif dispatch["has_resume_value"]:
        answer = dispatch["resume_value"]
        await record("interrupt:1", answer)
    else:
        return await ack(
            api,
            WORKER,
            attempt_id,
            "interrupted",
            interrupt={"value": {"question": "approve?"}, "step": "interrupt:1"},
        )
    return await ack(api, WORKER, attempt_id, output={"approved": answer})


async def _resume(api: httpx.AsyncClient, thread_id: str, value: Any) -> None:
    pending = await ok(api, "GET", "/v1/interrupts", params={"run_id": thread_id})
    interrupt_id = next(i for i in pending["interrupts"] if i["status"] == "pending")
    await ok(api, "POST", f"/v1/interrupts/{interrupt_id['interrupt_id']}/resume", {"value": value})


async def test_resume_after_a_replay_gets_the_new_answer(api: httpx.AsyncClient) -> None:
    await run(api, "lineage", workflow="approval", input={"doc": "v1"})
    assert (await _play_approval(api))["status"] == "interrupted"
    draft = (await ok(api, "GET", "/v1/jobs/lineage"))["checkpoint_id"]
    await _resume(api, "lineage", "A")
    assert (await _play_approval(api))["status"] == "completed"
    assert (await ok(api, "GET", "/v1/jobs/lineage"))["output"] == {"approved": "A"}

    await ok(api, "POST", "/v1/jobs/lineage/replay", {"checkpoint_id": draft})
    # Before the replay runs, the job shows the state it replays from, not the old answer.
    for path in ("/v1/jobs/lineage", "/v1/jobs/lineage/detail"):
        shown = await ok(api, "GET", path)
        assert shown["checkpoint_id"] == draft, path
        assert shown["values"] == {"steps": {"draft": {"draft": {"doc": "v1"}}}}, path
    assert (await _play_approval(api))["status"] == "interrupted"

    await _resume(api, "lineage", "B")
    resumed = await ok(api, "GET", "/v1/jobs/lineage")
    assert resumed["checkpoint_id"] == draft
    assert "interrupt:1" not in resumed["values"]["steps"]
    dispatch_checks = await _play_approval(api)
    assert dispatch_checks["status"] == "completed"
    final = await ok(api, "GET", "/v1/jobs/lineage")
    assert final["output"] == {"approved": "B"}
    assert final["values"]["steps"]["interrupt:1"] == "B"
    detail = await ok(api, "GET", "/v1/jobs/lineage/detail")
    assert detail["values"] == final["values"]
    assert detail["checkpoint_id"] == final["checkpoint_id"]


async def test_replay_without_a_checkpoint_starts_from_the_current_lineage(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "lineage-2", workflow="approval", input="doc")
    await _play_approval(api)
    draft = (await ok(api, "GET", "/v1/jobs/lineage-2"))["checkpoint_id"]
    await _resume(api, "lineage-2", "A")
    await _play_approval(api)
    # Replay from the draft; that run fails before it writes a checkpoint of its own.
    await ok(api, "POST", "/v1/jobs/lineage-2/replay", {"checkpoint_id": draft})
    failing = await poll(api, WORKER, workflows=["approval"])
    assert failing["checkpoint"]["checkpoint_id"] == draft
    await ack(api, WORKER, failing["attempt_id"], "failed", error={"message": "boom"})
    assert (await ok(api, "GET", "/v1/jobs/lineage-2"))["checkpoint_id"] == draft
    # A replay naming no checkpoint starts where the current lineage stands: the draft.
    replayed = await ok(api, "POST", "/v1/jobs/lineage-2/replay", {})
    assert replayed["checkpoint_id"] == draft
    # (the replay guard answers a second replay of one target with the first one's answer)
    assert replayed["idempotent_replay"] is True


async def _interrupt_after_a_retry(api: httpx.AsyncClient, thread_id: str) -> None:
    """Run ``thread_id`` (approval): its first execution fails and is retried, the second
    opens an interrupt."""
    started = await run(
        api,
        thread_id,
        workflow="approval",
        retry_policy={"strategy": "fixed", "backoff_ms": 1, "max_retries": 2},
    )
    first = await poll(api, WORKER, workflows=["approval"])
    error = {"message": "mail provider busy", "retryable": True}
    retried = await ack(api, WORKER, first["attempt_id"], "failed", error=error)
    assert retried["status"] == "retry_scheduled"
    shown = await ok(api, "GET", f"/v1/jobs/{thread_id}")
    assert (shown["status"], shown["error"]) == ("retry_backoff", error)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        again = await poll(api, WORKER, workflows=["approval"])
        if again["decision"] == "dispatched":
            break
        assert asyncio.get_running_loop().time() < deadline, "the retry was never dispatched"
        await asyncio.sleep(0.01)
    assert again["attempt_id"] == started["attempt_id"] and again["attempt_no"] == 2
    opened = await ack(
        api, WORKER, again["attempt_id"], "interrupted", interrupt={"value": "approve?"}
    )
    assert opened["status"] == "interrupted"


async def test_an_interrupted_job_shows_no_earlier_retry_error(api: httpx.AsyncClient) -> None:
    await _interrupt_after_a_retry(api, "err-interrupted")
    for path in ("/v1/jobs/err-interrupted", "/v1/jobs/err-interrupted/detail"):
        shown = await ok(api, "GET", path)
        assert (shown["status"], shown["error"]) == ("interrupted", None), path


async def test_a_job_cancelled_by_a_reject_shows_no_earlier_retry_error(
    api: httpx.AsyncClient,
) -> None:
    await _interrupt_after_a_retry(api, "err-rejected")
    pending = await ok(api, "GET", "/v1/interrupts", params={"run_id": "err-rejected"})
    interrupt_id = pending["interrupts"][0]["interrupt_id"]
    await ok(api, "POST", f"/v1/interrupts/{interrupt_id}/reject", {"reason": "no"})
    for path in ("/v1/jobs/err-rejected", "/v1/jobs/err-rejected/detail"):
        shown = await ok(api, "GET", path)
        assert (shown["status"], shown["error"]) == ("cancelled", None), path
