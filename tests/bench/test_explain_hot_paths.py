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
from oris.services import bulk, jobs, maintenance, resumption, retention, scheduler, schedules
from oris.services.context import RequestContext
from oris.services.jobs import JobQuery
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


def sequential_scans(backend: str, plan: str, tables: tuple[str, ...] = HOT_TABLES) -> list[str]:
    """The hot tables a plan reads without an index."""
    if backend == "postgres":
        return [t for t in tables if re.search(rf"Seq Scan on {t}\b", plan)]
    # SQLite: "SCAN t" is a full table scan; "SCAN t USING [COVERING] INDEX i" is not.
    return [t for t in tables if re.search(rf"\bSCAN {t}\b(?! USING)", plan)]


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
    backend: str,
    rt: Runtime,
    statements: list[tuple[str, Any]],
    tables: tuple[str, ...] = HOT_TABLES,
    extra_tables: tuple[str, ...] = (),
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
            if scanned := sequential_scans(backend, plan, tables + extra_tables):
                offenders.append(f"{scanned}: {shown}\n{plan}")
            if bitmapped := bitmap_scans(backend, plan):
                offenders.append(f"bitmap scan of {bitmapped}: {shown}\n{plan}")
    return offenders, checked


# The seeded tables a purge deletes from (the others are empty, and any plan reads an empty
# table sequentially).
PURGED_TABLES = (
    "runtime_jobs",
    "runtime_attempts",
    "runtime_leases",
    "runtime_checkpoints",
    "runtime_idempotency",
)
# A production batch of up to 1,000 jobs is a tiny share of a table of a million; this keeps
# that share (0.1 %) against 20,000 jobs. With 500 of 20,000 a sequential scan is cheaper than
# 500 index probes, and the planner is right to take it; at a million rows it is not.
PURGE_BATCH = 20
_FINISH_HALF = """
    UPDATE runtime_jobs SET status = CASE WHEN CAST(substr(thread_id, 9) AS INTEGER) % 3 = 0
        THEN 'failed' ELSE 'completed' END, updated_at_ms = CAST(:old AS BIGINT)
    WHERE CAST(substr(thread_id, 9) AS INTEGER) <= CAST(:count AS INTEGER)"""
_IDEMPOTENCY = f"""{_NUMBERS}
    INSERT INTO runtime_idempotency (idempotency_key, operation, thread_id, payload_hash,
        response_json, created_at_ms)
    SELECT 'key-' || n, 'run', 'explain-' || n, 'h', 'null', CAST(:now AS BIGINT) FROM g"""


async def test_retention_plans_use_indexes(backend: str, rt: Runtime) -> None:
    """A retention pass over a large estate chooses and deletes its batches through indexes:
    the (status, updated_at_ms) index, attempts by run, and every owned row by its key."""
    now = now_ms()
    async with rt.db.write() as conn:
        for statement in _SEED:
            count = QUEUED if "attempt-done" not in statement else FINISHED
            await conn.execute(text(statement), {"count": count, "now": now})
        await conn.execute(text(_IDEMPOTENCY), {"count": QUEUED, "now": now})
        await conn.execute(text(_FINISH_HALF), {"count": QUEUED // 2, "old": now - 40 * 86_400_000})
    async with rt.db.write() as conn:
        await conn.execute(text("ANALYZE"))
    small = Runtime(
        db=rt.db,
        settings=rt.settings.model_copy(update={"retention_batch_size": PURGE_BATCH}),
        metrics=rt.metrics,
    )
    with captured(rt) as statements:
        purged = await retention.sweep(small)
    assert purged == {"completed": PURGE_BATCH, "failed": PURGE_BATCH}, purged
    offenders, checked = await plan_offenders(backend, rt, statements, PURGED_TABLES)
    assert checked >= 20, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)


LISTED = 100_000
DEAD = 10_000
# The DLQ holds failures only and is read in page order on its own indexes; the tables that
# grow with every job are the ones checked (HOT_TABLES).
LIST_TABLES = ("runtime_audit_logs",)
# Jobs of 50 workflows and 100 tenants, one a second going back from now, each with its
# attempt; as in a deployment that has run for a while, nearly all are finished. Every tenth
# failed and was dead-lettered (its attempt names the workflow and tenant the DLQ filters on).
_LIST_SEED = [
    f"""{_NUMBERS}
    INSERT INTO runtime_jobs (thread_id, status, workflow, input_json, tenant_id, priority,
        run_no, current_attempt_id, created_at_ms, updated_at_ms)
    SELECT 'list-' || n,
        CASE WHEN n % 10 = 0 THEN 'failed' WHEN n % 97 = 0 THEN 'queued'
            WHEN n % 101 = 0 THEN 'running' ELSE 'completed' END,
        'wf-' || (n % 50), '{{}}', 't-' || (n % 100), 0, 1, 'attempt-list-' || n,
        CAST(:now AS BIGINT) - n * 1000, CAST(:now AS BIGINT) - n * 500 FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, retry_base_no, status,
        kind, workflow, priority, tenant_id, available_at_ms, trace_flags, created_at_ms,
        updated_at_ms)
    SELECT 'attempt-list-' || n, 'list-' || n, 1, 1, 0,
        CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'completed' END, 'run',
        'wf-' || (n % 50), 0, 't-' || (n % 100), CAST(:now AS BIGINT), '01',
        CAST(:now AS BIGINT), CAST(:now AS BIGINT) FROM g""",
    f"""{_NUMBERS}
    INSERT INTO runtime_dead_letters (attempt_id, run_id, attempt_no, terminal_status, reason,
        dead_at_ms, replay_status, replay_count, workflow, tenant_id)
    SELECT 'attempt-list-' || (n * 10), 'list-' || (n * 10), 1, 'failed', 'exhausted',
        CAST(:now AS BIGINT) - n * 10000, 'pending', 0, 'wf-' || ((n * 10) % 50),
        't-' || ((n * 10) % 100) FROM g""",
]


async def test_filtered_and_paged_list_plans_use_indexes(backend: str, rt: Runtime) -> None:
    """``GET /v1/jobs`` and ``GET /v1/dlq`` with each filter, a cursor page of each, and the
    selections of the bulk actions' dry runs: no sequential scan of a runtime table."""
    now = now_ms()
    async with rt.db.write() as conn:
        for statement in _LIST_SEED:
            count = DEAD if "runtime_dead_letters" in statement else LISTED
            await conn.execute(text(statement), {"count": count, "now": now})
    async with rt.db.write() as conn:
        await conn.execute(text("ANALYZE"))
    ctx = RequestContext.internal("explain-lists")
    old = now - 15_000 * 1000
    job_queries = [
        JobQuery(workflow="wf-7"),
        JobQuery(tenant_id="t-42"),
        JobQuery(workflow="wf-7", tenant_id="t-7"),
        JobQuery(created_after=old),
        JobQuery(created_before=now - 19_000 * 1000),
        JobQuery(workflow="wf-3", created_after=old),
    ]
    with captured(rt) as statements:
        for query in job_queries:
            for order in ("updated", "created"):
                first = await jobs.list_jobs(
                    rt.db, status=None, limit=50, offset=None, query=query, order=order
                )
                assert first["jobs"], (query, order)
                if first["next_cursor"]:
                    await jobs.list_jobs(
                        rt.db,
                        status=None,
                        limit=50,
                        offset=None,
                        query=query,
                        cursor=first["next_cursor"],
                    )
        # Unfiltered pages (their total is counted only on the first page).
        first = await jobs.list_jobs(rt.db, status=None, limit=50, offset=None, order="created")
        await jobs.list_jobs(rt.db, status=None, limit=50, offset=None, cursor=first["next_cursor"])
        for dlq_query in (
            resumption.DeadLetterQuery(),
            resumption.DeadLetterQuery(workflow="wf-10"),
            resumption.DeadLetterQuery(tenant_id="t-20", status="pending"),
        ):
            page = await resumption.list_dead_letters(rt.db, status=None, limit=20, query=dlq_query)
            assert page["entries"]
            if page["next_cursor"]:
                await resumption.list_dead_letters(
                    rt.db, status=None, limit=20, query=dlq_query, cursor=page["next_cursor"]
                )
        cancel = await bulk.cancel_jobs(
            rt.db, ctx, JobQuery(workflow="wf-9"), limit=1000, dry_run=True, reason=None
        )
        assert cancel["count"] > 0
        replay = await bulk.replay_dead_letters(
            rt.db, ctx, resumption.DeadLetterQuery(workflow="wf-10"), limit=1000, dry_run=True
        )
        assert replay["count"] > 0
    # A page's total is a count of every matching job, which no index makes cheaper than the
    # matches themselves: cursor pages skip it (see docs/compatibility.md). The pages and the
    # bulk selections are what must stay on an index.
    paged = [
        (sql, params)
        for sql, params in statements
        if not sql.lstrip().startswith("SELECT count(*)")
    ]
    offenders, checked = await plan_offenders(backend, rt, paged, extra_tables=LIST_TABLES)
    assert checked >= 30, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)


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
        if ("runtime_schedules" in sql or "'scheduled'" in sql or "runtime_jobs" in sql)
        # The lease-expiry sweep also locks job rows now (the row lock order), but it reads
        # the lease table, which this test leaves empty; its plans are guarded above.
        and "runtime_leases" not in sql
    ]
    offenders, checked = await plan_offenders(backend, rt, mine)
    assert checked >= 4, f"only {checked} statements captured"
    assert not offenders, "\n\n".join(offenders)
