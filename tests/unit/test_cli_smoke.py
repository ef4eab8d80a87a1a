"""The smoke flow against a scripted API (httpx mock transport, no sockets): it only ever polls
for ``oris.smoke``, completes leftover smoke jobs, never acks other work, and gives up in bounds."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from oris.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE
from oris.cli.smoke import (
    SMOKE_WORKFLOW,
    SmokeLimits,
    SmokeReport,
    StepResult,
    new_thread_id,
    new_worker_id,
    run_smoke,
)
from oris.config import ClientSettings

SETTINGS = ClientSettings(server_url="http://oris.test")
FAST = SmokeLimits(max_polls=5, poll_deadline_seconds=5.0, poll_interval_seconds=0.0)


@dataclass
class ScriptedApi:
    """Just enough of the API for one smoke run; polls hand out ``queue`` in order."""

    queue: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    polls: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    leases: dict[str, str] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request with an envelope."""
        path = request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        if path == "/v1/jobs/run":
            self.jobs[body["thread_id"]] = "queued"
            self.queue.append({"thread_id": body["thread_id"], "workflow": body["workflow"]})
            return _ok({"thread_id": body["thread_id"], "status": "queued", "attempt_id": "a"})
        if path.startswith("/v1/jobs/"):
            thread_id = path.rsplit("/", 1)[-1]
            return _ok(
                {"thread_id": thread_id, "workflow": SMOKE_WORKFLOW, "status": self.jobs[thread_id]}
            )
        if path == "/v1/workers/poll":
            self.polls.append(body)
            if not self.queue:
                return _ok({"decision": "noop", "dispatches": []})
            job = self.queue.pop(0)
            self.jobs[job["thread_id"]] = "running"
            attempt_id = f"attempt-{job['thread_id']}"
            self.leases[attempt_id] = job["thread_id"]
            dispatch = {**job, "attempt_id": attempt_id, "lease_id": f"lease-{attempt_id}"}
            return _ok({"decision": "dispatched", **dispatch, "dispatches": [dispatch]})
        if path.endswith("/ack"):
            self.acks.append(body)
            self.jobs[self.leases[body["attempt_id"]]] = body["terminal_status"]
            return _ok({"attempt_id": body["attempt_id"], "status": body["terminal_status"]})
        return httpx.Response(
            404,
            json={
                "request_id": "r",
                "error": {"code": "not_found", "message": path, "details": None},
            },
        )


def _ok(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"meta": {"status": "ok"}, "request_id": "r", "data": data})


async def smoke_against(
    api: ScriptedApi, limits: SmokeLimits = FAST
) -> tuple[SmokeReport, list[StepResult]]:
    """Run the flow against ``api``; return the report and the steps as they were announced."""
    announced: list[StepResult] = []
    report = await run_smoke(
        SETTINGS, limits=limits, on_step=announced.append, transport=httpx.MockTransport(api.handle)
    )
    return report, announced


def test_ids_are_throwaway_and_recognisable() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert re.fullmatch(r"smoke-20250304T050607Z-[0-9a-f]{8}", new_thread_id(moment))
    assert new_thread_id(moment) != new_thread_id(moment)
    assert re.fullmatch(r"smoke-worker-[0-9a-f]{8}", new_worker_id())


async def test_a_healthy_api_passes_every_step_in_order() -> None:
    api = ScriptedApi()
    report, announced = await smoke_against(api)
    assert report.exit_code == EXIT_OK
    assert [(step.name, step.ok) for step in announced] == [
        ("run", True),
        ("inspect", True),
        ("poll", True),
        ("ack", True),
        ("verify", True),
    ]
    assert report.to_json()["failed_step"] is None
    assert api.jobs[report.thread_id] == "completed"


async def test_every_poll_names_only_the_smoke_workflow() -> None:
    api = ScriptedApi(queue=[{"thread_id": "smoke-old", "workflow": SMOKE_WORKFLOW}])
    api.jobs["smoke-old"] = "queued"
    report, _ = await smoke_against(api)
    assert report.ok
    assert api.polls
    assert all(poll["workflows"] == [SMOKE_WORKFLOW] and poll["limit"] == 1 for poll in api.polls)
    assert all(poll["worker_id"] == report.worker_id for poll in api.polls)


async def test_leftover_smoke_jobs_are_completed_on_the_way() -> None:
    leftovers = [{"thread_id": f"smoke-old-{n}", "workflow": SMOKE_WORKFLOW} for n in (1, 2)]
    api = ScriptedApi(queue=list(leftovers))
    api.jobs.update({job["thread_id"]: "queued" for job in leftovers})
    report, _ = await smoke_against(api)
    assert report.ok
    assert report.leftovers_acked == ["smoke-old-1", "smoke-old-2"]
    assert api.jobs["smoke-old-1"] == api.jobs["smoke-old-2"] == "completed"
    assert report.polls == 3
    assert "completed 2 leftover smoke job(s)" in report.steps[2].detail


async def test_work_of_another_workflow_is_never_acked() -> None:
    api = ScriptedApi(queue=[{"thread_id": "real-job", "workflow": "echo"}])
    api.jobs["real-job"] = "queued"
    report, announced = await smoke_against(api)
    assert report.exit_code == EXIT_FAILURE
    assert (announced[-1].name, announced[-1].ok) == ("poll", False)
    assert "'echo'" in announced[-1].detail
    assert api.acks == []


async def test_polling_gives_up_after_the_poll_budget() -> None:
    api = ScriptedApi()

    def never_dispatch(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/workers/poll":
            api.polls.append(json.loads(request.content))
            return _ok({"decision": "noop", "dispatches": []})
        return api.handle(request)

    announced: list[StepResult] = []
    report = await run_smoke(
        SETTINGS,
        limits=SmokeLimits(max_polls=3, poll_deadline_seconds=5.0, poll_interval_seconds=0.0),
        on_step=announced.append,
        transport=httpx.MockTransport(never_dispatch),
    )
    assert report.exit_code == EXIT_FAILURE
    assert len(api.polls) == 3
    assert announced[-1].name == "poll"
    assert "not dispatched after 3 polls" in announced[-1].detail
    assert "job status 'queued'" in announced[-1].detail


async def test_an_unreachable_api_fails_the_first_step_with_exit_3() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    report = await run_smoke(SETTINGS, limits=FAST, transport=httpx.MockTransport(refuse))
    assert report.exit_code == EXIT_UNREACHABLE
    assert [(step.name, step.ok) for step in report.steps] == [("run", False)]
    assert report.steps[0].detail.startswith("server unreachable")
