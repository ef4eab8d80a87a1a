"""The drills: one per runbook playbook, plus worker crash and backup/restore."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from oris.client import ApiError
from oris.drills.harness import DrillFailed, DrillRun

DrillFunction = Callable[[DrillRun], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Drill:
    """A drill and the runbook section it rehearses."""

    name: str
    playbook: str
    summary: str
    run: DrillFunction
    postgres_only: bool = False


async def _submit(run: DrillRun, thread_id: str, **fields: Any) -> dict[str, Any]:
    return await run.client().run_job(thread_id, **fields)


async def _wait_terminal(
    run: DrillRun, threads: list[str], *, within: float, wanted: set[str] | None = None
) -> bool:
    states = wanted or {"completed"}
    return bool(await run.eventually(lambda: run.all_status(threads, states), within=within))


async def _healthz(run: DrillRun) -> int:
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            return (await http.get(f"{run.url}/healthz")).status_code
    except httpx.HTTPError:
        return 0


# --- API unavailable ------------------------------------------------------------------------


async def api_unavailable(run: DrillRun) -> None:
    """Persistence becomes unreachable under a running server, then comes back."""
    await run.start_server()
    run.start_worker("worker-1")
    warm = [f"warm-{i}" for i in range(3)]
    for thread in warm:
        await _submit(run, thread, input=thread)
    run.expect("baseline: jobs complete", await _wait_terminal(run, warm, within=30))
    await run.snapshot("before")

    offline = run.data_dir.with_name("data.offline")
    if run.postgres:
        assert run.proxy is not None
        await run.proxy.stop()
        run.note("fault: the network path to PostgreSQL is cut")
    else:
        run.data_dir.rename(offline)
        run.note("fault: the SQLite database directory disappears")
    try:
        status = await run.eventually(lambda: _expect_code(run, 503), within=20)
        run.expect("/healthz fails", status, "healthz answers 503")
        async with httpx.AsyncClient(base_url=run.url, timeout=10) as http:
            codes = [
                (await http.post("/v1/jobs/run", json={"thread_id": f"down-{i}"})).status_code
                for i in range(3)
            ]
            codes.append((await http.get("/v1/jobs")).status_code)
        run.expect(
            "/v1/jobs* answers 5xx", all(code >= 500 for code in codes), f"status codes {codes}"
        )
        await run.snapshot("during")
        during = await run.metrics()
        run.expect(
            "the scrape reports the database down", during.get("oris_runtime_database_up") == 0
        )
    finally:
        if run.postgres:
            assert run.proxy is not None
            await run.proxy.start()
        elif offline.exists():
            offline.rename(run.data_dir)
        run.note("mitigation: persistence restored (path and credentials verified)")

    run.expect("/healthz recovers", await run.eventually(lambda: _expect_code(run, 200), within=20))
    after = [f"after-{i}" for i in range(5)]
    accepted = 0
    for thread in after:
        try:
            await _submit(run, thread, input=thread)
            accepted += 1
        except ApiError:
            pass
    run.expect(
        "API success rate recovers",
        accepted == len(after),
        f"{accepted}/{len(after)} runs accepted",
    )
    run.expect(
        "the worker rides out the outage and drains new work",
        await _wait_terminal(run, after, within=30),
    )
    await run.snapshot("after")
    await run.smoke()


async def _expect_code(run: DrillRun, code: int) -> bool:
    return await _healthz(run) == code


# --- Queue depth rising, no dispatch ------------------------------------------------------


async def queue_no_dispatch(run: DrillRun) -> None:
    """Workers die while jobs keep arriving; restarting them drains the queue."""
    await run.start_server()
    worker = run.start_worker("worker-1", concurrency=2)
    long_jobs = ["long-1", "long-2"]
    for thread in long_jobs:
        await _submit(run, thread, workflow="sleep", input={"ms": 3000})
    running = await _wait_terminal(run, long_jobs, within=20, wanted={"running"})
    run.expect("baseline: the worker picked up work", running)
    await run.snapshot("before")

    worker.signal(signal.SIGKILL)
    await worker.wait(5)
    run.note("fault: every worker is killed (SIGKILL) while holding leases")
    client = run.client()
    arriving = [f"arrive-{i}" for i in range(6)]
    before = await run.metrics()
    for thread in arriving:
        await _submit(run, thread, input=thread)
    depth = await run.eventually(lambda: _depth_at_least(run, 8), within=20)
    run.expect("queue depth grows (arrivals + requeued work)", depth)
    middle = await run.metrics()
    run.expect(
        "polls dispatch nothing while no worker is alive",
        middle.get("oris_runtime_dispatches_total") == before.get("oris_runtime_dispatches_total"),
    )

    async def expired_leases() -> int:
        count = 0
        for thread in long_jobs:
            events = [e["event_type"] for e in (await client.job_timeline(thread))["timeline"]]
            count += events.count("lease_expired")
        return count if count >= len(long_jobs) else 0

    expired = await run.eventually(expired_leases, within=15)
    run.expect(
        "the dead worker's leases went stale and were expired (no poll needed)",
        expired == len(long_jobs),
        f"{expired} lease_expired events",
    )
    workers = await client.request("GET", "/v1/workers", params={"window_seconds": 1})
    run.expect("no worker has polled recently", workers["workers"] == [])
    await run.snapshot("during")

    run.start_worker("worker-2", concurrency=4)
    run.note("mitigation: the unhealthy worker is replaced")
    everything = long_jobs + arriving
    run.expect(
        "the queue drains: every job completes", await _wait_terminal(run, everything, within=45)
    )
    await run.eventually(lambda: _depth_drained(run), within=5)  # counts refresh every 0.2 s
    after = await run.snapshot("after")
    run.expect("queue depth back to 0", after["oris_runtime_queue_depth"] == 0)
    run.expect(
        "recovery latency was recorded for the requeued work",
        (after["recovery_count"] or 0) >= len(long_jobs),
    )
    await run.smoke()


async def _depth_at_least(run: DrillRun, depth: int) -> bool:
    return (await run.metrics()).get("oris_runtime_queue_depth", 0) >= depth


async def _depth_drained(run: DrillRun) -> bool:
    return (await run.metrics()).get("oris_runtime_queue_depth") == 0


# --- Sustained backpressure --------------------------------------------------------------------


async def sustained_backpressure(run: DrillRun) -> None:
    """A noisy tenant floods past its limit; later worker capacity is cut; both recover."""
    await run.start_server(ORIS_MAX_ACTIVE_LEASES_PER_TENANT="2")
    run.start_worker("worker-1", concurrency=6)
    await run.snapshot("before")
    noisy = [f"noisy-{i}" for i in range(10)]
    quiet = [f"quiet-{i}" for i in range(3)]
    for thread in noisy:
        await _submit(run, thread, workflow="sleep", input={"ms": 600}, tenant_id="noisy")
    for thread in quiet:
        await _submit(run, thread, workflow="sleep", input={"ms": 100}, tenant_id="quiet")
    run.note("fault 1: tenant 'noisy' floods the queue past its lease limit")
    rising = await run.eventually(
        lambda: _metric_above(run, 'oris_runtime_backpressure_total{reason="tenant_limit"}', 0),
        within=20,
    )
    run.expect('backpressure_total{reason="tenant_limit"} rises', rising)
    quiet_done = await _wait_terminal(run, quiet, within=20)
    noisy_statuses = await run.job_statuses(noisy)
    waiting = sum(1 for s in noisy_statuses.values() if s != "completed")
    run.expect(
        "the other tenant is never starved",
        quiet_done and waiting > 0,
        f"quiet done while {waiting} noisy jobs still waited",
    )
    await run.snapshot("during")
    run.expect(
        "the noisy tenant's work drains at its limit", await _wait_terminal(run, noisy, within=60)
    )

    await run.stop_server()
    await run.start_server(ORIS_MAX_ACTIVE_LEASES_PER_WORKER="1")
    run.note("fault 2: worker capacity removed (per-worker lease limit cut to 1)")
    batch = [f"batch-{i}" for i in range(8)]
    for thread in batch:
        await _submit(run, thread, workflow="sleep", input={"ms": 400})
    rising = await run.eventually(
        lambda: _metric_above(run, 'oris_runtime_backpressure_total{reason="worker_limit"}', 0),
        within=20,
    )
    run.expect(
        'backpressure_total{reason="worker_limit"} rises with work queued',
        # The queue counts refresh every 0.2 s: the first scrape may predate the submits.
        rising and await run.eventually(lambda: _depth_at_least(run, 1), within=5),
    )

    await run.stop_server()
    await run.start_server(ORIS_MAX_ACTIVE_LEASES_PER_WORKER="4")
    run.start_worker("worker-2", concurrency=4)
    run.note(
        "mitigation: capacity added gradually (limit 1 -> 4, one more worker); guardrails kept"
    )
    run.expect("the queue drains", await _wait_terminal(run, batch, within=45))
    first = (await run.metrics()).get("oris_runtime_backpressure_total", 0)
    settled = await run.snapshot("after")
    await asyncio.sleep(1)
    later = await run.metrics()
    run.expect(
        "backpressure stops once capacity matches demand",
        later.get('oris_runtime_backpressure_total{reason="worker_limit"}')
        == settled["backpressure_worker_limit"],
        f"{first}",
    )
    await run.smoke()


async def _metric_above(run: DrillRun, key: str, floor: float) -> bool:
    return (await run.metrics()).get(key, 0) > floor


# --- High terminal error rate ------------------------------------------------------------------


async def high_terminal_error_rate(run: DrillRun) -> None:
    """A bad release fails every payment; roll back, replay the DLQ, error rate recovers."""
    await run.start_server()
    good = run.start_worker("release-good", app="oris.drills.apps:good_release")
    policy = {"strategy": "fixed", "backoff_ms": 50, "max_retries": 0}
    baseline = [f"pay-ok-{i}" for i in range(4)]
    for thread in baseline:
        await _submit(run, thread, workflow="payments", input={"amount": 10}, retry_policy=policy)
    run.expect("baseline: payments complete", await _wait_terminal(run, baseline, within=30))
    await run.snapshot("before")

    await good.stop()
    bad = run.start_worker("release-bad", app="oris.drills.apps:bad_release")
    run.note("fault: release v2 of the payments workflow is deployed and rejects every card")
    broken = [f"pay-bad-{i}" for i in range(8)]
    for thread in broken:
        await _submit(run, thread, workflow="payments", input={"amount": 20}, retry_policy=policy)
    run.expect(
        "failed jobs land in the DLQ",
        await _wait_terminal(run, broken, within=30, wanted={"failed"}),
    )
    during = await run.snapshot("during")
    rate = during["oris_runtime_terminal_error_rate"] or 0
    run.expect("terminal error rate above 5 %", rate > 0.05, f"{rate:.2f}")
    run.expect(
        "DLQ grows", (during["dlq_pending"] or 0) >= len(broken), f"{during['dlq_pending']} pending"
    )

    client = run.client()
    incident = await client.request(
        "POST", "/v1/incidents", json={"reason": "payments failing after release v2"}
    )
    run.note(
        f"mitigation: incident {incident['incident_id']} opened; replays frozen while the cause is found"
    )
    entries = (await client.list_dlq(status="pending"))["entries"]
    try:
        await client.replay_dlq(entries[0]["attempt_id"])
        run.expect("replays are frozen during the incident", False)
    except ApiError as error:
        run.expect("replays are frozen during the incident", error.code == "incident_freeze")
    await bad.stop()
    run.start_worker("release-good-again", app="oris.drills.apps:good_release")
    run.note("mitigation: rolled back to the good release")
    probe = ["pay-probe"]
    await _submit(run, probe[0], workflow="payments", input={"amount": 1}, retry_policy=policy)
    run.expect(
        "the rollback works: new payments complete", await _wait_terminal(run, probe, within=30)
    )
    await client.request("POST", "/v1/incidents/close", json={"reason": "rolled back to v1"})
    replay = run.spawn("dlq-replay", "dlq", "replay", *[e["attempt_id"] for e in entries])
    run.expect("DLQ entries replayed (oris dlq replay)", await replay.wait(60) == 0, replay.tail(5))
    run.expect("replayed payments complete", await _wait_terminal(run, broken, within=45))
    recovered = await run.eventually(
        lambda: _metric_at_most(run, "oris_runtime_terminal_error_rate", 0.05), within=20
    )
    run.expect("terminal error rate back within baseline", recovered)
    await run.snapshot("after")
    await run.smoke()


async def _metric_at_most(run: DrillRun, key: str, ceiling: float) -> bool:
    value = (await run.metrics()).get(key)
    return value is not None and value <= ceiling


# --- Failed deploy after schema change ------------------------------------------------------


async def failed_deploy_after_schema_change(run: DrillRun) -> None:
    """The database was migrated by a newer release; this code refuses it and nothing is written."""
    await run.start_server()
    run.start_worker("worker-1")
    jobs = ["deploy-1", "deploy-2"]
    for thread in jobs:
        await _submit(run, thread, input=thread)
    run.expect("baseline: jobs complete", await _wait_terminal(run, jobs, within=30))
    await run.snapshot("before")
    for process in list(run.processes):
        await process.stop()
    run.server = None
    run.note("runbook: workers and API stopped before touching the schema")

    backup = run.root / "backup"
    _take_backup(run, backup)
    code_version = int(_schema_version(run))
    future = code_version + 1
    _sql(
        run,
        f"INSERT INTO runtime_schema_migrations (version, name, applied_at_ms) VALUES ({future}, 'from_a_newer_release', 0)",
    )
    rows_before = _row_counts(run)
    run.note(
        f"fault: the database now records schema version {future}; the deployed code supports {code_version}"
    )

    started = time.monotonic()
    serve = run.spawn("serve-old-code", "serve", ORIS_SERVER_ADDR=f"127.0.0.1:{run.port}")
    code = await serve.wait(30)
    elapsed = time.monotonic() - started
    message = serve.tail(5)
    run.expect(
        "startup fails fast",
        code not in (None, 0) and elapsed < 30,
        f"exit {code} after {elapsed:.1f}s",
    )
    run.expect(
        "the message names both schema versions",
        f"schema version {future} is newer than supported {code_version}" in message,
        message.splitlines()[-1] if message else "",
    )
    run.expect("nothing was written", _row_counts(run) == rows_before)
    run.phases["during"] = {"startup_exit_code": code}

    _restore_backup(run, backup)
    run.note("mitigation: restored the pre-upgrade backup (the matching code is what is deployed)")
    await run.start_server()
    run.expect("the runtime starts on the restored database", await _healthz(run) == 200)
    statuses = await run.job_statuses(jobs)
    run.expect("data from before the change is intact", set(statuses.values()) == {"completed"})
    await run.snapshot("after")
    await run.smoke()


def _sql(run: DrillRun, statement: str) -> str:
    if run.postgres:
        return run.psql(statement)
    import sqlite3

    connection = sqlite3.connect(run.data_dir / "oris.db")
    try:
        rows = connection.execute(statement).fetchall()
        connection.commit()
        return "\n".join("|".join(str(v) for v in row) for row in rows)
    finally:
        connection.close()


def _schema_version(run: DrillRun) -> str:
    return _sql(run, "SELECT max(version) FROM runtime_schema_migrations")


def _row_counts(run: DrillRun) -> dict[str, str]:
    tables = ("runtime_jobs", "runtime_attempts", "runtime_audit_logs", "runtime_schema_migrations")
    return {table: _sql(run, f"SELECT count(*) FROM {table}") for table in tables}


def _take_backup(run: DrillRun, backup: Path) -> None:
    backup.mkdir(parents=True, exist_ok=True)
    if run.postgres:
        import subprocess

        dump = backup / "schema.sql"
        subprocess.run(
            [
                "pg_dump",
                run.config.dsn or "",
                "--schema",
                run.schema,
                "--format=plain",
                "--no-owner",
                "--no-privileges",
                "-f",
                str(dump),
            ],
            check=True,
        )
    else:
        for suffix in ("", "-wal", "-shm"):
            source = run.data_dir / f"oris.db{suffix}"
            if source.exists():
                shutil.copy2(source, backup / source.name)


def _restore_backup(run: DrillRun, backup: Path) -> None:
    if run.postgres:
        import subprocess

        run.psql(f'DROP SCHEMA IF EXISTS "{run.schema}" CASCADE')
        subprocess.run(
            [
                "psql",
                run.config.dsn or "",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(backup / "schema.sql"),
            ],
            check=True,
            capture_output=True,
        )
        return
    for suffix in ("", "-wal", "-shm"):
        (run.data_dir / f"oris.db{suffix}").unlink(missing_ok=True)
    for saved in backup.iterdir():
        shutil.copy2(saved, run.data_dir / saved.name)


# --- Duplicate replay suspected -----------------------------------------------------------


async def duplicate_replay(run: DrillRun) -> None:
    """The same replay and the same DLQ replay, many times at once: one execution each."""
    await run.start_server()
    worker = run.start_worker("worker-1")
    ledger = run.root / "ledger.txt"
    await _submit(run, "effect", workflow="side_effect", input={"ledger": str(ledger)})
    await _submit(
        run,
        "doomed",
        workflow="fail",
        retry_policy={"strategy": "fixed", "backoff_ms": 10, "max_retries": 0},
    )
    run.expect(
        "baseline: the side effect ran once",
        await _wait_terminal(run, ["effect"], within=30) and _lines(ledger) == 1,
    )
    run.expect(
        "the failing job is dead-lettered",
        await _wait_terminal(run, ["doomed"], within=30, wanted={"failed"}),
    )
    await run.snapshot("before")
    client = run.client()
    first_checkpoint = (await client.request("GET", "/v1/jobs/effect/history"))["history"][0][
        "checkpoint_id"
    ]
    attempt_id = (await client.list_dlq())["entries"][0]["attempt_id"]

    # No worker while the replays arrive: a worker could run the requeued "doomed" job, see it
    # fail and dead-letter it again mid-storm, and a later DLQ replay would rightly succeed.
    await worker.stop()
    async with httpx.AsyncClient(base_url=run.url, timeout=20) as http:
        replays = await asyncio.gather(
            *(
                http.post("/v1/jobs/effect/replay", json={"checkpoint_id": first_checkpoint})
                for _ in range(20)
            )
        )
        dlq = await asyncio.gather(*(http.post(f"/v1/dlq/{attempt_id}/replay") for _ in range(20)))
    run.start_worker("worker-2")
    run.note(
        "fault: an operator (or a retrying script) fires 20 identical replays and 20 DLQ replays at once"
    )
    fresh = [
        r
        for r in replays
        if r.status_code == 200 and r.json()["data"]["idempotent_replay"] is False
    ]
    duplicate_ok = all(r.status_code in (200, 409) for r in replays)
    run.expect(
        "exactly one replay queues work; the rest return its result",
        len(fresh) == 1 and duplicate_ok,
    )
    dlq_codes = sorted(r.status_code for r in dlq)
    run.expect(
        "exactly one DLQ replay succeeds; the rest get 409",
        dlq_codes == [200] + [409] * 19,
        str(collections.Counter(dlq_codes)),
    )
    await run.snapshot("during")
    run.expect("the replay runs to completion", await _wait_terminal(run, ["effect"], within=30))
    # The script keeps retrying after the replay finished: the guard, not the job's state,
    # must now answer with the first result.
    answered = 0
    for _ in range(5):
        # A refusal (a new execution is running) means the guard did not answer.
        with contextlib.suppress(ApiError):
            reply = await client.replay_job("effect", first_checkpoint)
            answered += reply["idempotent_replay"] is True
    run.expect(
        "late duplicates are answered from the guard without executing",
        answered == 5,
        f"{answered} of 5 answered from the guard",
    )
    await _wait_terminal(run, ["effect"], within=30)
    await asyncio.sleep(0.5)
    run.expect(
        "the side-effect ledger shows one execution per target",
        _lines(ledger) == 2,
        f"{_lines(ledger)} ledger lines",
    )
    logs = (await client.audit_logs(limit=500))["logs"]
    replay_rows = [r for r in logs if r["action"] == "job.replay"]
    dlq_rows = [r for r in logs if r["action"] == "dlq.replay"]
    run.expect(
        "the audit log shows every replay attempt",
        len(replay_rows) == 25 and len(dlq_rows) == 20,
        f"{len(replay_rows)} job.replay, {len(dlq_rows)} dlq.replay rows",
    )
    targets = {
        r["details"].get("replay_target")
        for r in replay_rows
        if r["result"] == "success" and r["details"]
    }
    run.expect(
        "the replay target is recorded", targets == {f"checkpoint:{first_checkpoint}"}, str(targets)
    )
    await run.snapshot("after")
    await run.smoke()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- Worker crash ------------------------------------------------------------------------------


async def worker_crash(run: DrillRun) -> None:
    """Workers are SIGKILLed mid-step under load; leases expire and others finish the work."""
    await run.start_server()
    ledger = run.root / "steps.txt"
    app = "oris.drills.apps:ledger_steps"
    first = [run.start_worker(f"worker-{i}", app=app, concurrency=3) for i in (1, 2)]
    jobs = [f"crash-{i}" for i in range(6)]
    for thread in jobs:
        await _submit(
            run,
            thread,
            workflow="ledger_steps",
            input={"steps": 4, "sleep_ms": 300, "ledger": str(ledger)},
        )
    await run.eventually(lambda: _async_true(_lines(ledger) >= 6), within=30, interval=0.05)
    await run.snapshot("before")
    for process in first:
        process.signal(signal.SIGKILL)
    for process in first:
        await process.wait(5)
    run.note(f"fault: both workers SIGKILLed mid-step ({_lines(ledger)} steps had run)")
    client = run.client()
    finished_before: dict[str, set[str]] = {}
    for thread in jobs:
        values = (await client.inspect_job(thread))["values"]
        finished_before[thread] = set((values or {}).get("steps", {}))
    await run.snapshot("during")
    run.start_worker("worker-3", app=app, concurrency=6)
    run.note(
        "recovery: leases expire on their own; a new worker continues from the last checkpoint"
    )
    run.expect("every job reaches a terminal state", await _wait_terminal(run, jobs, within=60))
    executions = collections.Counter(
        tuple(line.split()) for line in ledger.read_text().splitlines()
    )
    rerun = [
        f"{t}/{s}" for t, steps in finished_before.items() for s in steps if executions[(t, s)] != 1
    ]
    run.expect(
        "no finished step was executed again",
        not rerun,
        ", ".join(rerun) or f"{len(executions)} step executions checked",
    )
    missing = [
        f"{t}/step_{i}" for t in jobs for i in range(1, 5) if executions[(t, f"step_{i}")] == 0
    ]
    run.expect("nothing was lost: every step ran", not missing, ", ".join(missing))
    after = await run.snapshot("after")
    run.expect(
        "recovery latency was recorded",
        (after["recovery_count"] or 0) >= 1,
        f"p95 <= {after['oris_runtime_recovery_latency_ms']} ms",
    )
    await run.smoke()


async def _async_true(value: bool) -> bool:
    return value


# --- Backup and restore (PostgreSQL) ----------------------------------------------------------


async def backup_restore(run: DrillRun) -> None:
    """Dump, drop and restore the runtime schema; the restored runtime dispatches queued work."""
    await run.start_server()
    worker = run.start_worker("worker-1")
    done = [f"done-{i}" for i in range(3)]
    for thread in done:
        await _submit(run, thread, input=thread)
    run.expect("baseline: jobs complete", await _wait_terminal(run, done, within=30))
    await worker.stop()
    queued = [f"queued-{i}" for i in range(4)]
    for thread in queued:
        await _submit(run, thread, input=thread)
    await _submit(run, "leased-1", input="held")
    client = run.client()
    held = await client.poll("rehearsal-worker", workflows=["echo"], limit=1)
    run.expect("one attempt is leased when the backup is taken", held["decision"] == "dispatched")
    await run.snapshot("before")
    counts_sql = {
        "migrations": "SELECT count(*) FROM runtime_schema_migrations",
        "jobs": "SELECT count(*) FROM runtime_jobs",
        "queued_attempts": "SELECT count(*) FROM runtime_attempts WHERE status = 'queued'",
        "active_leases": "SELECT count(*) FROM runtime_leases WHERE state = 'active'",
    }
    before = {name: run.psql(sql) for name, sql in counts_sql.items()}
    await run.stop_server()
    run.note("runbook: writers stopped; final snapshot taken with pg_dump")
    backup = run.root / "backup"
    _take_backup(run, backup)
    run.expect("the dump is not empty", (backup / "schema.sql").stat().st_size > 0)
    run.psql(f'DROP SCHEMA "{run.schema}" CASCADE')
    run.note("fault: the runtime schema is dropped")
    _restore_backup(run, backup)
    after_counts = {name: run.psql(sql) for name, sql in counts_sql.items()}
    run.phases["during"] = {"counts_before": before, "counts_after_restore": after_counts}
    run.expect(
        "migration history, queued work and leases preserved",
        after_counts == before,
        f"{after_counts}",
    )
    await run.start_server()
    run.start_worker("worker-2")
    run.note("mitigation: runtime restarted on the restored data")
    run.expect(
        "the restored runtime dispatches the queued work",
        await _wait_terminal(run, queued, within=30),
    )
    run.expect(
        "the lease held at backup time expires and its job completes",
        await _wait_terminal(run, ["leased-1"], within=30),
    )
    await run.snapshot("after")
    await run.smoke()


DRILLS: dict[str, Drill] = {
    drill.name: drill
    for drill in (
        Drill(
            "api-unavailable",
            "API unavailable",
            "persistence made unreachable under a running server",
            api_unavailable,
        ),
        Drill(
            "queue-no-dispatch",
            "Queue depth rising, no dispatch",
            "workers killed while jobs keep arriving",
            queue_no_dispatch,
        ),
        Drill(
            "sustained-backpressure",
            "Sustained backpressure",
            "a noisy tenant floods past its limit; then worker capacity is removed",
            sustained_backpressure,
        ),
        Drill(
            "high-terminal-error-rate",
            "High terminal error rate",
            "a bad release makes the workflow fail",
            high_terminal_error_rate,
        ),
        Drill(
            "failed-deploy-after-schema-change",
            "Failed deploy after schema change",
            "the database is migrated by a newer revision than the deployed code",
            failed_deploy_after_schema_change,
        ),
        Drill(
            "duplicate-replay",
            "Duplicate replay suspected",
            "the same replay and DLQ replay issued many times concurrently",
            duplicate_replay,
        ),
        Drill(
            "worker-crash",
            "Escalation: worker crash",
            "SIGKILL of workers mid-step under load",
            worker_crash,
        ),
        Drill(
            "backup-restore",
            "Escalation: persistence recovery",
            "dump, drop and restore of the runtime schema",
            backup_restore,
            postgres_only=True,
        ),
    )
}


async def run_drill(drill: Drill, run: DrillRun) -> dict[str, Any]:
    """Run one drill from setup to teardown and return its report."""
    await run.setup()
    try:
        await drill.run(run)
    except DrillFailed as error:
        run.expect("drill ran to the end", False, str(error))
    except Exception as error:  # a drill must always report, whatever broke
        run.expect("drill ran to the end", False, f"{type(error).__name__}: {error}")
    finally:
        await run.teardown()
    report = run.report()
    report["playbook"] = drill.playbook
    report["fault"] = drill.summary
    return report
