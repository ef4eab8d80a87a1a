"""End to end: ``oris serve`` and ``oris worker`` as real processes, on both backends.

The module also holds ``ledger_app``, a registry factory the tests load with ``--app``: its
workflows write one ledger line per step execution, which is how the tests count executions.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import httpx
import pytest

from oris.config import ServerSettings
from oris.worker import Context, Registry, RetryableError
from tests.support import ROOT, Process, oris_command, running_server, server_env, wait_until

pytestmark = pytest.mark.e2e

FAST_LEASES: dict[str, Any] = {
    "lease_ttl_seconds": 2,
    "lease_grace_seconds": 0,
    "maintenance_interval_seconds": 0.2,
}
APP = "tests.e2e.test_worker_e2e:ledger_app"


def ledger_app() -> Registry:
    """Workflows for the tests: ``ledger_steps``, ``declared_retries`` (a workflow that declares
    its default retry policy) and ``stall`` (used through ``--app``)."""
    registry = Registry()

    @registry.workflow("ledger_steps")
    async def ledger_steps(ctx: Context, input: Any) -> Any:
        ledger = Path(input["ledger"])

        def work(index: int) -> dict[str, Any]:
            time.sleep(input["sleep_ms"] / 1000)
            if index == input.get("hold_at"):
                # Holds the step until the test opens the gate: the crash lands mid-step.
                gate = Path(input["gate"])
                deadline = time.monotonic() + 60
                while not gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            name = f"step_{index}"
            with ledger.open("a", encoding="utf-8") as handle:
                handle.write(f"{name} {ctx.worker_id} {ctx.attempt_no}\n")
            return {"worker_id": ctx.worker_id, "attempt_no": ctx.attempt_no}

        for index in range(1, input["steps"] + 1):
            await ctx.step(f"step_{index}", work, index)
        return ctx.state

    @registry.workflow(
        "declared_retries", retry_policy={"strategy": "fixed", "backoff_ms": 50, "max_retries": 2}
    )
    async def declared_retries(ctx: Context, input: Any) -> Any:
        if ctx.attempt_no <= input["fail_times"]:
            raise RetryableError(f"failing execution {ctx.attempt_no} on purpose")
        return {"attempt_no": ctx.attempt_no}

    @registry.workflow("stall")
    async def stall(ctx: Context, input: Any) -> Any:
        if ctx.attempt_no == 1:
            # Blocks the event loop on purpose: no heartbeat can go out, so the lease expires.
            time.sleep(input["stall_ms"] / 1000)
        return {"attempt_no": ctx.attempt_no, "worker_id": ctx.worker_id}

    return registry


class Cluster:
    """One ``oris serve`` plus the ``oris worker`` processes a test starts against it."""

    def __init__(self, settings: ServerSettings, tmp_path: Path, url: str) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)
        self.workers: list[Process] = []

    def start_worker(self, worker_id: str, *args: str, **env: str) -> Process:
        """Start ``oris worker`` with fast polling, logging JSON lines to its own file."""
        process = Process(
            [*oris_command(), "worker", *args],
            server_env(
                self.settings,
                ORIS_SERVER_URL=self.url,
                ORIS_WORKER_ID=worker_id,
                ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS="0.2",
                PYTHONPATH=str(ROOT),
                **env,
            ),
            self.tmp_path / f"worker-{worker_id}.log",
        )
        self.workers.append(process)
        return process

    def close(self) -> None:
        """Stop every worker, then the HTTP client."""
        for process in self.workers:
            process.stop()
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Call the API and return the envelope's ``data`` (any error fails the test)."""
        response = self.http.request(method, path, json=body)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def run(self, thread_id: str, workflow: str, input: Any = None, **fields: Any) -> Any:
        """``POST /v1/jobs/run``."""
        body = {"thread_id": thread_id, "workflow": workflow, "input": input, **fields}
        return self.call("POST", "/v1/jobs/run", body)

    def job(self, thread_id: str) -> Any:
        """``GET /v1/jobs/{thread_id}``."""
        return self.call("GET", f"/v1/jobs/{thread_id}")

    def detail(self, thread_id: str) -> Any:
        """``GET /v1/jobs/{thread_id}/detail``."""
        return self.call("GET", f"/v1/jobs/{thread_id}/detail")

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """Checkpoints of the job, oldest first."""
        return list(self.call("GET", f"/v1/jobs/{thread_id}/history")["history"])

    def step_names(self, thread_id: str) -> list[str]:
        """The step of every checkpoint after the initial one, in order."""
        return [item["step"] for item in self.history(thread_id) if item["step"] is not None]

    def wait_status(self, thread_id: str, status: str, timeout: float = 20) -> Any:
        """Wait until the job has ``status`` and return it."""

        def reached() -> Any:
            job = self.job(thread_id)
            return job if job["status"] == status else None

        return wait_until(reached, timeout=timeout, message=f"{thread_id} to be {status}")

    def pending_interrupt(self, thread_id: str) -> Any:
        """Wait for the job's pending interrupt and return it."""
        self.wait_status(thread_id, "interrupted")
        found = self.call("GET", f"/v1/interrupts?run_id={thread_id}&status=pending")
        assert len(found["interrupts"]) == 1, found
        return found["interrupts"][0]


def log_lines(process: Process) -> list[dict[str, Any]]:
    """The JSON log lines a worker printed so far."""
    lines = []
    for raw in process.output().splitlines():
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def logged(process: Process, msg: str, **fields: Any) -> list[dict[str, Any]]:
    """Log lines with this message whose fields match."""
    return [
        line
        for line in log_lines(process)
        if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())
    ]


def wait_logged(process: Process, msg: str, **fields: Any) -> dict[str, Any]:
    """Wait until the worker logs ``msg`` with these fields; return the first such line."""

    def found() -> Any:
        if process.popen.poll() is not None:
            raise AssertionError(f"worker exited early:\n{process.output()}")
        lines = logged(process, msg, **fields)
        return lines[0] if lines else None

    return wait_until(found, timeout=20, message=f"worker log {msg!r} {fields}")  # type: ignore[no-any-return]


def ledger_counts(path: Path) -> collections.Counter[str]:
    """How many times each step name appears in a ledger."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


@pytest.fixture
def cluster(make_settings: Callable[..., ServerSettings], tmp_path: Path) -> Iterator[Cluster]:
    """A running server with short leases; workers are started by each test."""
    settings = make_settings(**FAST_LEASES)
    with running_server(settings, tmp_path) as url:
        created = Cluster(settings, tmp_path, url)
        try:
            yield created
        finally:
            created.close()


def test_echo_completes_with_its_input(cluster: Cluster) -> None:
    cluster.start_worker("w-echo")
    cluster.run("echo-1", "echo", {"hello": ["world", 1]})
    job = cluster.wait_status("echo-1", "completed")
    assert job["output"] == {"output": {"hello": ["world", 1]}}


def test_steps_checkpoint_every_step_once(cluster: Cluster) -> None:
    cluster.start_worker("w-steps")
    cluster.run("steps-1", "steps", {"steps": 3, "sleep_ms": 10})
    job = cluster.wait_status("steps-1", "completed")
    assert sorted(job["output"]["steps"]) == ["step_1", "step_2", "step_3"]
    assert cluster.step_names("steps-1") == ["step_1", "step_2", "step_3"]


def test_approval_resumes_with_the_answer_without_redrafting(cluster: Cluster) -> None:
    cluster.start_worker("w-approval")
    cluster.run("approve-1", "approval", {"doc": "v1"})
    interrupt = cluster.pending_interrupt("approve-1")
    assert interrupt["step"] == "interrupt:1"
    assert interrupt["value"]["draft"] == {"doc": "v1"}
    cluster.call(
        "POST", f"/v1/interrupts/{interrupt['interrupt_id']}/resume", {"value": {"ok": True}}
    )
    job = cluster.wait_status("approve-1", "completed")
    assert job["output"] == {"approved": {"ok": True}}
    assert cluster.step_names("approve-1") == ["draft", "interrupt:1"]


def test_approval_reject_cancels_the_job(cluster: Cluster) -> None:
    worker = cluster.start_worker("w-reject")
    cluster.run("reject-1", "approval", "draft me")
    interrupt = cluster.pending_interrupt("reject-1")
    cluster.call(
        "POST", f"/v1/interrupts/{interrupt['interrupt_id']}/reject", {"reason": "not today"}
    )
    assert cluster.job("reject-1")["status"] == "cancelled"
    acked = logged(worker, "attempt acked", thread_id="reject-1")
    assert [line["terminal_status"] for line in acked] == ["interrupted"]


def test_replay_before_the_interrupt_then_resume_completes_with_the_new_answer(
    cluster: Cluster,
) -> None:
    cluster.start_worker("w-lineage")
    cluster.run("lineage-e2e", "approval", "doc")
    first = cluster.pending_interrupt("lineage-e2e")
    cluster.call("POST", f"/v1/interrupts/{first['interrupt_id']}/resume", {"value": "A"})
    assert cluster.wait_status("lineage-e2e", "completed")["output"] == {"approved": "A"}
    draft = next(item for item in cluster.history("lineage-e2e") if item["step"] == "draft")
    cluster.call("POST", "/v1/jobs/lineage-e2e/replay", {"checkpoint_id": draft["checkpoint_id"]})
    second = cluster.pending_interrupt("lineage-e2e")
    assert second["interrupt_id"] != first["interrupt_id"]
    cluster.call("POST", f"/v1/interrupts/{second['interrupt_id']}/resume", {"value": "B"})
    job = cluster.wait_status("lineage-e2e", "completed")
    assert job["output"] == {"approved": "B"}
    assert job["values"]["steps"]["interrupt:1"] == "B"


def test_flaky_job_completes_on_its_third_attempt(cluster: Cluster) -> None:
    cluster.start_worker("w-flaky")
    started = cluster.run(
        "flaky-1",
        "flaky",
        {"fail_times": 2},
        retry_policy={"strategy": "fixed", "backoff_ms": 50, "max_retries": 3},
    )
    job = cluster.wait_status("flaky-1", "completed")
    assert job["output"] == {"attempt_no": 3}
    retries = cluster.call("GET", f"/v1/attempts/{started['attempt_id']}/retries")
    assert [item["attempt_no"] for item in retries["history"]] == [2, 3]


def test_failing_job_is_dead_lettered_and_replay_requeues_it(cluster: Cluster) -> None:
    cluster.start_worker("w-fail")
    started = cluster.run(
        "fail-1", "fail", retry_policy={"strategy": "fixed", "backoff_ms": 50, "max_retries": 2}
    )
    attempt_id = started["attempt_id"]
    cluster.wait_status("fail-1", "failed")
    entry = cluster.call("GET", f"/v1/dlq/{attempt_id}")
    assert entry["attempt_no"] == 3
    assert entry["replay_status"] == "pending"
    assert entry["error"]["type"] == "RetryableError"
    assert entry["error"]["retryable"] is True

    replayed = cluster.call("POST", f"/v1/dlq/{attempt_id}/replay")
    assert replayed["status"] == "requeued"

    def dead_again() -> Any:
        again = cluster.call("GET", f"/v1/dlq/{attempt_id}")
        return again if again["replay_status"] == "pending" else None

    again = wait_until(dead_again, timeout=20, message="the replayed attempt to fail again")
    assert again["replay_count"] == 1
    assert again["attempt_no"] == 6  # a fresh budget: three more executions
    assert cluster.job("fail-1")["status"] == "failed"


def test_worker_crash_resumes_from_last_checkpoint_without_rerunning_steps(
    cluster: Cluster,
) -> None:
    ledger = cluster.tmp_path / "crash-ledger.txt"
    gate = cluster.tmp_path / "crash-gate"
    first = cluster.start_worker("w-crash-a", "--app", APP)
    cluster.run(
        "crash-1",
        "ledger_steps",
        {"steps": 5, "sleep_ms": 400, "ledger": str(ledger), "hold_at": 3, "gate": str(gate)},
    )
    wait_until(
        lambda: len(cluster.step_names("crash-1")) == 2,
        timeout=20,
        message="steps 1 and 2 checkpointed by the first worker",
    )
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)
    assert cluster.step_names("crash-1") == ["step_1", "step_2"]

    gate.touch()
    cluster.start_worker("w-crash-b", "--app", APP)
    job = cluster.wait_status("crash-1", "completed")

    steps = job["output"]["steps"]
    assert cluster.step_names("crash-1") == [f"step_{i}" for i in range(1, 6)]
    assert {name: steps[name]["worker_id"] for name in steps} == {
        "step_1": "w-crash-a",
        "step_2": "w-crash-a",
        "step_3": "w-crash-b",
        "step_4": "w-crash-b",
        "step_5": "w-crash-b",
    }
    # The lease-expiry requeue of the same attempt (more than one requeue is possible when a
    # loaded machine delays the new worker's heartbeats; each keeps the attempt id).
    assert steps["step_3"]["attempt_no"] >= 2
    # Every step ran exactly once: the recovered attempt skipped the checkpointed ones.
    assert ledger_counts(ledger) == {f"step_{i}": 1 for i in range(1, 6)}


def test_sigterm_lets_the_running_attempt_finish_and_exits_zero(cluster: Cluster) -> None:
    worker = cluster.start_worker("w-graceful", "--shutdown-grace-seconds", "15")
    cluster.run("graceful-1", "sleep", {"ms": 1500})
    wait_logged(worker, "attempt dispatched", thread_id="graceful-1")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(20) == 0
    job = cluster.job("graceful-1")
    assert job["status"] == "completed"
    assert job["output"] == {"slept_ms": 1500}


def test_a_second_signal_exits_without_waiting_for_the_grace_period(cluster: Cluster) -> None:
    worker = cluster.start_worker("w-impatient", "--shutdown-grace-seconds", "600")
    cluster.run("impatient-1", "sleep", {"ms": 600_000})
    wait_logged(worker, "attempt dispatched", thread_id="impatient-1")
    worker.popen.send_signal(signal.SIGTERM)
    wait_logged(worker, "shutdown requested: no more polling; waiting for running attempts")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(20) != 0
    assert logged(worker, "attempt acked", thread_id="impatient-1") == []


def test_attempt_outliving_the_grace_period_is_cut_off_and_requeued(cluster: Cluster) -> None:
    worker = cluster.start_worker("w-cutoff", "--shutdown-grace-seconds", "0.2")
    started = cluster.run("cutoff-1", "sleep", {"ms": 60_000})
    wait_logged(worker, "attempt dispatched", thread_id="cutoff-1")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(20) == 0
    assert logged(worker, "attempt acked", thread_id="cutoff-1") == []

    def requeued() -> bool:
        events = [item["event_type"] for item in cluster.detail("cutoff-1")["timeline"]]
        return "lease_expired" in events

    wait_until(requeued, timeout=20, message="the abandoned lease to expire")
    attempts = cluster.detail("cutoff-1")["attempts"]
    assert [(a["attempt_id"], a["attempt_no"]) for a in attempts] == [(started["attempt_id"], 2)]


def test_cancelled_job_stops_its_handler_and_frees_the_slot(cluster: Cluster) -> None:
    worker = cluster.start_worker("w-cancel", "--concurrency", "1")
    started = cluster.run("cancel-1", "sleep", {"ms": 60_000})
    wait_logged(worker, "attempt dispatched", thread_id="cancel-1")
    cluster.call("POST", "/v1/jobs/cancel-1/cancel", {"reason": "operator"})
    lost = wait_logged(worker, "lease lost: handler cancelled, nothing more will be reported")
    assert lost["attempt_id"] == started["attempt_id"]
    assert lost["via"] == "heartbeat"
    # One slot: the echo can only run once the sleeping handler has really stopped.
    cluster.run("after-cancel", "echo", 1)
    cluster.wait_status("after-cancel", "completed")
    assert logged(worker, "attempt acked", thread_id="cancel-1") == []
    assert cluster.job("cancel-1")["status"] == "cancelled"


def test_worker_that_missed_its_lease_reports_nothing_more(cluster: Cluster) -> None:
    stalled = cluster.start_worker("w-stall-a", "--app", APP)
    started = cluster.run("stall-1", "stall", {"stall_ms": 6000})
    wait_logged(stalled, "attempt dispatched", thread_id="stall-1")
    cluster.start_worker("w-stall-b", "--app", APP)
    job = cluster.wait_status("stall-1", "completed")
    assert job["output"] == {"attempt_no": 2, "worker_id": "w-stall-b"}

    lost = wait_logged(stalled, "lease lost: handler cancelled, nothing more will be reported")
    assert lost["attempt_id"] == started["attempt_id"]
    assert logged(stalled, "attempt acked", thread_id="stall-1") == []
    assert cluster.job("stall-1")["output"] == {"attempt_no": 2, "worker_id": "w-stall-b"}


def test_concurrent_replays_execute_the_side_effect_once(cluster: Cluster) -> None:
    ledger = cluster.tmp_path / "replay-ledger.txt"
    cluster.start_worker("w-replay-a")
    cluster.start_worker("w-replay-b")
    cluster.run("replay-1", "side_effect", {"ledger": str(ledger)})
    cluster.wait_status("replay-1", "completed")
    assert len(ledger.read_text().splitlines()) == 1
    first_checkpoint = cluster.history("replay-1")[0]["checkpoint_id"]

    racers = 20
    barrier = Barrier(racers)

    def replay(_: int) -> httpx.Response:
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            barrier.wait()
            return client.post("/v1/jobs/replay-1/replay", json={"checkpoint_id": first_checkpoint})

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(replay, range(racers)))
    accepted = [r.json()["data"] for r in responses if r.status_code == 200]
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    winners = [data for data in accepted if data["idempotent_replay"] is False]
    assert len(winners) == 1
    assert {data["attempt_id"] for data in accepted} == {winners[0]["attempt_id"]}

    def replay_finished() -> bool:
        attempts = cluster.detail("replay-1")["attempts"]
        return any(
            a["attempt_id"] == winners[0]["attempt_id"] and a["status"] == "completed"
            for a in attempts
        )

    wait_until(replay_finished, timeout=20, message="the replay attempt to complete")
    assert cluster.job("replay-1")["status"] == "completed"
    assert len(ledger.read_text().splitlines()) == 2


def test_worker_process_refuses_an_app_that_names_no_registry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [*oris_command(), "worker", "--app", "tests.e2e.test_worker_e2e:no_such_thing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "has no attribute 'no_such_thing'" in result.stderr


def test_a_saturated_worker_acks_every_job(
    make_settings: Callable[..., ServerSettings], tmp_path: Path
) -> None:
    # Many short jobs for a worker of two slots: every slot is busy after nearly every poll,
    # so acks ride on polls, and a poll's dispatches arrive while the attempts it acked are
    # still ending. Each job must end completed (acks were dropped there, and their jobs
    # stayed running with heartbeated leases).
    # Short leases: heartbeats are frequent, so attempts often end with one in flight (it is
    # cut off as the outcome is decided). A dropped ack's lease stayed heartbeated, so no
    # expiry rescued its job.
    settings = make_settings(lease_ttl_seconds=2)
    jobs = 150
    with running_server(settings, tmp_path) as url:
        cluster = Cluster(settings, tmp_path, url)
        try:
            for n in range(jobs):
                cluster.run(f"burst-{n}", "steps", {"steps": 1, "sleep_ms": 5})
            worker = cluster.start_worker("w-burst", ORIS_WORKER_CONCURRENCY="2")

            def settled() -> bool:
                return bool(cluster.call("GET", "/v1/jobs?status=completed")["total"] == jobs)

            wait_until(settled, timeout=120, message=f"all {jobs} jobs to complete")
            for status in ("queued", "running", "retry_backoff", "failed"):
                assert cluster.call("GET", f"/v1/jobs?status={status}")["total"] == 0, status
            acked = logged(worker, "attempt acked")
            assert {line["thread_id"] for line in acked} == {f"burst-{n}" for n in range(jobs)}
            assert all(line["terminal_status"] == "completed" for line in acked)
        finally:
            cluster.close()


def test_a_worker_refused_credentials_backs_off_and_logs_each_step_once(
    make_settings: Callable[..., ServerSettings], tmp_path: Path
) -> None:
    # The first managed key switches authentication on under a worker that sends none.
    settings = make_settings()
    with running_server(settings, tmp_path) as url:
        cluster = Cluster(settings, tmp_path, url)
        try:
            worker = cluster.start_worker("w-locked", ORIS_WORKER_AUTH_BACKOFF_MAX_SECONDS="2")
            wait_logged(worker, "worker started")
            created = cluster.call("POST", "/v1/keys", {"role": "admin", "key_id": "ops"})
            admin = {"x-api-key-id": "ops", "x-api-key": created["secret"]}

            refused_polls = re.compile(
                r'^oris_runtime_http_requests_total\{method="POST",route="/v1/workers/poll",'
                r'status_class="4xx"\} (\d+)',
                re.MULTILINE,
            )

            def refusals() -> int:
                response = cluster.http.get("/metrics", headers=admin)
                assert response.status_code == 200, response.text
                found = refused_polls.search(response.text)
                return int(found.group(1)) if found else 0

            # Refused after a pause of up to 1 s, then 2 s (the cap), then 2 s again: the
            # third refusal and those after it are not logged.
            wait_until(lambda: refusals() >= 4, timeout=60, message="four refused polls")
            lines = [
                line
                for line in log_lines(worker)
                if str(line.get("msg")).startswith("poll refused")
            ]
            assert [line["backoff_seconds"] for line in lines] == [1.0, 2.0], lines
            assert all(line["level"] == "error" and line["status"] == 401 for line in lines)
            assert "further refusals are not logged" in lines[-1]["msg"]
            assert not logged(worker, "poll failed; will try again")
        finally:
            cluster.close()


def test_a_workflow_declared_retry_policy_applies_unless_the_job_has_its_own(
    cluster: Cluster,
) -> None:
    cluster.start_worker("w-declared", "--app", APP)
    # No policy on the job: the workflow's (two retries) applies.
    started = cluster.run("declared-1", "declared_retries", {"fail_times": 2})
    assert cluster.wait_status("declared-1", "completed")["output"] == {"attempt_no": 3}
    retries = cluster.call("GET", f"/v1/attempts/{started['attempt_id']}/retries")
    assert [item["attempt_no"] for item in retries["history"]] == [2, 3]
    # The job's own policy wins, both ways: none left, and more than the workflow allows.
    none_left = {"strategy": "fixed", "backoff_ms": 50, "max_retries": 0}
    cluster.run("declared-2", "declared_retries", {"fail_times": 1}, retry_policy=none_left)
    failed = cluster.wait_status("declared-2", "failed")
    assert failed["error"]["type"] == "RetryableError"
    more = {"strategy": "fixed", "backoff_ms": 50, "max_retries": 4}
    cluster.run("declared-3", "declared_retries", {"fail_times": 3}, retry_policy=more)
    assert cluster.wait_status("declared-3", "completed")["output"] == {"attempt_no": 4}
