"""The worker protocol's statements stay on indexes when the tables are large (both backends).

A fresh schema gets 20,000 queued jobs (job, start checkpoint, attempt) and 20,000 finished
attempts with released leases around them (eight of them live, for a tenant at its cap), and is
analysed. Polls with and without a workflow list, a batch ack, a single ack and a heartbeat then
run through the service code while every statement they send is
captured; each is EXPLAINed with the parameters it was sent with. No plan may read a runtime
table sequentially: with a million rows that is the difference between a claim of a
millisecond and one of seconds, and a fresh leases table that a cached plan keeps scanning was
the drain's main cost once. On PostgreSQL no plan may read the churning tables with a bitmap
scan either (see the second test).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text

from oris.domain.clock import now_ms
from oris.services import maintenance, scheduler, schedules
from oris.services.context import RequestContext
from oris.services.runtime import Runtime

QUEUED = 20_000
FINISHED = 20_000
CHURNED = 2_000
HOT_TABLES = (
    "runtime_attempts",
    "runtime_jobs",
    "runtime_leases",
    "runtime_checkpoints",
    "runtime_timeline_events",
)

# Every dispatch and ack rewrites their rows, leaving dead entries in their indexes.
CHURNING_TABLES = ("runtime_attempts", "runtime_leases", "runtime_jobs")

_NUMBERS = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < CAST(:count AS INTEGER))"
_SEED = [
    f"""{_NUMBERS}
    INSERT INTO runtime_jobs (thread_id, status, workflow, input_json, priority, run_no,
        current_attempt_id, created_at_ms, updated_at_ms)
    SELECT 'explain-' || n, 'queued', 'echo', '{{"n": 1}}', 0, 1, 'attempt-explain-' || n,
        CAST(:now AS BIGINT), CAST(:now AS BIGINT) FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_checkpoints (checkpoint_id, thread_id, attempt_id, seq, step, state_json,
        created_at_ms)
    SELECT 'cp-explain-' || n, 'explain-' || n, NULL, 0, NULL, '{{}}', CAST(:now AS BIGINT) FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, retry_base_no, status,
        kind, workflow, priority, available_at_ms, trace_id, trace_span_id, trace_flags,
        start_checkpoint_id, created_at_ms, updated_at_ms)
    SELECT 'attempt-explain-' || n, 'explain-' || n, 1, 1, 0, 'queued', 'run', 'echo', 0,
        CAST(:now AS BIGINT) - 1000, 'trace' || n, 'span' || n, '01', 'cp-explain-' || n, CAST(:now AS BIGINT), CAST(:now AS BIGINT) FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, retry_base_no, status,
        kind, workflow, priority, available_at_ms, trace_flags, created_at_ms, updated_at_ms,
        started_at_ms, finished_at_ms)
    SELECT 'attempt-done-' || n, 'explain-' || n, 0, 1, 0, 'completed', 'run', 'echo', 0,
        CAST(:now AS BIGINT) - 5000, '01', CAST(:now AS BIGINT), CAST(:now AS BIGINT), CAST(:now AS BIGINT), CAST(:now AS BIGINT) FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_leases (lease_id, attempt_id, worker_id, tenant_id, state,
        acquired_at_ms, heartbeat_at_ms, lease_expires_at_ms, version, ended_at_ms)
    SELECT 'lease-done-' || n, 'attempt-done-' || n, 'explain-worker', NULL, 'released',
        CAST(:now AS BIGINT) - 5000, CAST(:now AS BIGINT) - 5000, CAST(:now AS BIGINT) - 1000, 2, CAST(:now AS BIGINT) - 4000 FROM g""",
]
# A tenant at its cap (8 live leases), so the claim also runs with tenants excluded.
_CAPPED_TENANT = """
    UPDATE runtime_leases SET state = 'active', tenant_id = 'tenant-capped',
        lease_expires_at_ms = CAST(:now AS BIGINT) + 600000, ended_at_ms = NULL
    WHERE lease_id IN ('lease-done-1', 'lease-done-2', 'lease-done-3', 'lease-done-4',
        'lease-done-5', 'lease-done-6', 'lease-done-7', 'lease-done-8')"""


@contextmanager
def captured(rt: Runtime) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the runtime sends while the block runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        seen.append((statement, params[0] if many and params else params))

    engine = rt.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def sequential_scans(backend: str, plan: str) -> list[str]:
    """The hot tables a plan reads without an index."""
    if backend == "postgres":
        return [t for t in HOT_TABLES if re.search(rf"Seq Scan on {t}\b", plan)]
    # SQLite: "SCAN t" is a full table scan; "SCAN t USING [COVERING] INDEX i" is not.
    return [t for t in HOT_TABLES if re.search(rf"\bSCAN {t}\b(?! USING)", plan)]


def bitmap_scans(backend: str, plan: str) -> list[str]:
    """The churning tables a PostgreSQL plan reads with a bitmap scan, which (unlike a plain
    index scan) never marks the dead index entries it meets and so re-reads them every time."""
    if backend != "postgres":
        return []
    return [t for t in CHURNING_TABLES if re.search(rf"Bitmap Heap Scan on {t}\b", plan)]


async def test_poll_ack_and_heartbeat_plans_use_indexes(backend: str, rt: Runtime) -> None:
    now = now_ms()
    async with rt.db.write() as conn:
        for statement in _SEED:
            count = QUEUED if "attempt-done" not in statement else FINISHED
            await conn.execute(text(statement), {"count": count, "now": now})
        await conn.execute(text(_CAPPED_TENANT), {"now": now})
    async with rt.db.write() as conn:
        await conn.execute(text("ANALYZE"))

    with captured(rt) as statements:
        polled = await scheduler.poll(
            rt, scheduler.PollCommand(worker_id="explain-w", limit=8, workflows=["echo"])
        )
        leases = polled["dispatches"]
        assert len(leases) == 8
        # Without a workflow list (reserved oris.* workflows excluded), from another worker.
        other = await scheduler.poll(rt, scheduler.PollCommand(worker_id="explain-v", limit=1))
        assert other["decision"] == "dispatched"
        await scheduler.heartbeat(rt, "explain-w", leases[0]["lease_id"], None)
        acks = [
            scheduler.AckCommand(
                attempt_id=item["attempt_id"],
                terminal_status="completed",
                lease_id=item["lease_id"],
                output={"ok": True},
            )
            for item in leases[:7]
        ]
        answers = await scheduler.ack_many(rt, "explain-w", acks)
        assert all(error is None for _, error in answers)
        await scheduler.ack(
            rt,
            "explain-w",
            scheduler.AckCommand(
                attempt_id=leases[7]["attempt_id"],
                terminal_status="failed",
                lease_id=leases[7]["lease_id"],
                error={"message": "boom"},
            ),
        )

    sent = [" ".join(statement.split()) for statement, _ in statements]
    excluded = re.compile(r"NOT IN|NOT \(runtime_attempts\.tenant_id = ANY")
    assert any(excluded.search(s) for s in sent), "the capped tenant was not excluded in SQL"
    assert any("NOT LIKE" in s for s in sent), "no claim without a workflow list"
    offenders, checked = await plan_offenders(backend, rt, statements)
    assert checked >= 12, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)


async def test_plans_stay_on_plain_index_scans_as_leases_churn(backend: str, rt: Runtime) -> None:
    """Statistics taken while jobs were queued and no lease existed yet, then thousands of jobs
    dispatched and acked: dead row versions pile up until VACUUM (this machine's PostgreSQL
    runs without autovacuum; with it they still wait for the next run). A busy round's plans
    must still read the churning tables through plain index scans. The statistics make the
    partial "active" lease index look nearly empty, so a bitmap scan of all of it looks free,
    and a bitmap scan re-reads every dead entry on every poll."""
    async with rt.db.write() as conn:
        for statement in _SEED[:3]:  # queued jobs, their start checkpoints and attempts
            await conn.execute(text(statement), {"count": CHURNED, "now": now_ms()})
    async with rt.db.write() as conn:
        await conn.execute(text("ANALYZE"))  # while no lease exists yet
    acks: list[scheduler.AckCommand] = []
    for _ in range(CHURNED // 8 - 1):
        acks = await busy_round(rt, acks)
    with captured(rt) as statements:
        await busy_round(rt, acks)
    offenders, checked = await plan_offenders(backend, rt, statements)
    assert checked >= 5, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)


async def busy_round(rt: Runtime, acks: list[scheduler.AckCommand]) -> list[scheduler.AckCommand]:
    """One poll of 8 carrying the previous round's completions; returns this round's acks."""
    answer, answers = await scheduler.ack_and_poll(
        rt, scheduler.PollCommand(worker_id="churn-w", limit=8, workflows=["echo"]), acks
    )
    assert all(error is None for _, error in answers)
    assert answer["decision"] == "dispatched", answer
    return [
        scheduler.AckCommand(
            attempt_id=item["attempt_id"],
            terminal_status="completed",
            lease_id=item["lease_id"],
            output={"ok": True},
        )
        for item in answer["dispatches"]
    ]


async def plan_offenders(
    backend: str, rt: Runtime, statements: list[tuple[str, Any]]
) -> tuple[list[str], int]:
    """EXPLAIN each captured statement with its parameters; the plans that scan a hot table
    sequentially or a churning one with a bitmap scan, and how many statements were checked."""
    explain = "EXPLAIN " if backend == "postgres" else "EXPLAIN QUERY PLAN "
    checked = 0
    offenders = []
    async with rt.db.read() as conn:
        for statement, params in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in {"SELECT", "UPDATE", "INSERT", "DELETE", "WITH"}:
                continue
            if "pg_notify" in statement:
                continue
            rows = (await conn.exec_driver_sql(explain + statement, params)).all()
            plan = "\n".join(" ".join(str(v) for v in row) for row in rows)
            checked += 1
            shown = " ".join(statement.split())[:300]
            if tables := sequential_scans(backend, plan):
                offenders.append(f"{tables}: {shown}\n{plan}")
            if tables := bitmap_scans(backend, plan):
                offenders.append(f"bitmap scan of {tables}: {shown}\n{plan}")
    return offenders, checked


async def test_a_maintenance_pass_with_schedules_and_waiting_jobs_uses_indexes(
    backend: str, rt: Runtime
) -> None:
    """Promoting due delayed jobs and ticking schedules reads only the waiting jobs and the
    due schedules, not every job: a deep queue must not make each pass slower."""
    now = now_ms()
    async with rt.db.write() as conn:
        for statement in _SEED[:3]:
            await conn.execute(text(statement), {"count": QUEUED, "now": now})
        await conn.execute(
            text(
                "UPDATE runtime_jobs SET status = 'scheduled', run_at_ms = CAST(:at AS BIGINT)"
                " WHERE thread_id IN ('explain-1', 'explain-2', 'explain-3')"
            ),
            {"at": now - 10},
        )
    ctx = RequestContext.internal()
    await schedules.create(
        rt.db,
        ctx,
        schedules.ScheduleCommand(schedule_id="explain-s", workflow="echo", every_seconds=1),
    )
    async with rt.db.write() as conn:
        await conn.execute(
            text("UPDATE runtime_schedules SET next_run_at_ms = next_run_at_ms - 1000")
        )
        await conn.execute(text("ANALYZE"))
    with captured(rt) as statements:
        result = await maintenance.sweep(rt)
    assert result.jobs_due == 3
    assert result.ticks_queued >= 1
    # The lease and timeout sweeps are older statements on tables this test leaves empty.
    mine = [
        (sql, params)
        for sql, params in statements
        if "runtime_schedules" in sql or "'scheduled'" in sql or "runtime_jobs" in sql
    ]
    offenders, checked = await plan_offenders(backend, rt, mine)
    assert checked >= 4, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)
