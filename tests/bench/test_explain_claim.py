"""The dispatch claim stays on its partial index when the queue is deep (PostgreSQL only).

A fresh schema gets ~20,000 queued attempts (plus finished ones around them), is analysed, and
the claim statement of ``oris.store.dispatch.claim_candidates`` is EXPLAINed (plan only, no
ANALYZE) in the shapes a poll sends: with a workflow list (what ``oris worker`` sends), without
one (reserved ``oris.*`` workflows excluded), and with throttled tenants excluded. None of them
may read ``runtime_attempts`` sequentially: at a million queued rows that is the difference
between a sub-millisecond claim and one of seconds.

The statement is rebuilt here with the same SQLAlchemy expression as ``claim_candidates``
(nothing is factored out of ``oris/`` for the test); keep the two in step.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from sqlalchemy import ColumnElement, or_, select, text

from oris.domain.clock import now_ms
from oris.domain.states import AttemptStatus
from oris.services.runtime import Runtime
from oris.store.dispatch import RESERVED_WORKFLOW_PREFIX
from oris.store.tables import attempts

QUEUED = 20_000
FINISHED = 2_000
DISPATCHABLE = [AttemptStatus.QUEUED.value, AttemptStatus.RETRY_BACKOFF.value]


def _workflow_filter(workflows: Collection[str] | None) -> ColumnElement[bool]:
    if workflows is not None:
        return attempts.c.workflow.in_(list(workflows))
    return attempts.c.workflow.not_like(f"{RESERVED_WORKFLOW_PREFIX}%")


def claim_statement(
    *, now: int, limit: int, workflows: Collection[str] | None, excluded_tenants: Collection[str]
) -> Any:
    """The PostgreSQL claim statement, built exactly as ``claim_candidates`` builds it."""
    statement = (
        select(attempts)
        .where(attempts.c.status.in_(DISPATCHABLE), attempts.c.available_at_ms <= now)
        .order_by(attempts.c.priority.desc(), attempts.c.available_at_ms, attempts.c.seq)
        .limit(limit)
    )
    statement = statement.where(_workflow_filter(workflows))
    if excluded_tenants:
        statement = statement.where(
            or_(attempts.c.tenant_id.is_(None), attempts.c.tenant_id.not_in(list(excluded_tenants)))
        )
    return statement.with_for_update(skip_locked=True)


_SEED = """
INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, retry_base_no, status,
    kind, workflow, priority, tenant_id, available_at_ms, trace_flags, created_at_ms,
    updated_at_ms, started_at_ms, finished_at_ms)
SELECT 'attempt-explain-' || g || '-' || md5(g::text), 'explain-' || g, 1, 1, 0,
       CASE WHEN g <= CAST(:queued AS integer) THEN 'queued' ELSE 'completed' END,
       'run',
       CASE g % 3 WHEN 0 THEN 'echo' WHEN 1 THEN 'steps' ELSE 'sleep' END,
       (g % 4) - 1,
       CASE WHEN g % 5 = 0 THEN 'tenant-' || (g % 7) END,
       CAST(:now AS bigint) - (g % 1000), '01', CAST(:now AS bigint), CAST(:now AS bigint),
       CASE WHEN g > CAST(:queued AS integer) THEN CAST(:now AS bigint) END,
       CASE WHEN g > CAST(:queued AS integer) THEN CAST(:now AS bigint) END
FROM generate_series(1, CAST(:total AS integer)) AS g
"""


async def test_claim_uses_the_dispatch_index_not_a_sequential_scan(
    backend: str, rt: Runtime
) -> None:
    if backend == "sqlite":
        pytest.skip("query plans are checked on PostgreSQL, the backend figures are quoted on")
    now = now_ms()
    async with rt.db.write() as conn:
        await conn.execute(text(_SEED), {"queued": QUEUED, "total": QUEUED + FINISHED, "now": now})
    async with rt.db.write() as conn:
        await conn.execute(text("ANALYZE runtime_attempts"))
        queued = (
            await conn.execute(
                text("SELECT count(*) FROM runtime_attempts WHERE status = 'queued'")
            )
        ).scalar_one()
        assert queued == QUEUED

        shapes: dict[str, dict[str, Any]] = {
            "worker poll (workflow list), limit 1": {
                "limit": 1,
                "workflows": ["echo", "steps", "sleep"],
                "excluded_tenants": [],
            },
            "worker poll (workflow list), limit 100": {
                "limit": 100,
                "workflows": ["echo"],
                "excluded_tenants": [],
            },
            "poll without workflows": {"limit": 1, "workflows": None, "excluded_tenants": []},
            "poll with throttled tenants": {
                "limit": 8,
                "workflows": ["echo", "steps"],
                "excluded_tenants": ["tenant-1", "tenant-3"],
            },
        }
        for label, shape in shapes.items():
            statement = claim_statement(now=now, **shape)
            sql = str(
                statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            )
            plan = "\n".join(
                str(row[0]) for row in (await conn.execute(text(f"EXPLAIN {sql}"))).all()
            )
            assert "Seq Scan on runtime_attempts" not in plan, f"{label}:\n{plan}"
