"""Table health in ``/metrics``: the oldest job retention could purge, and the table sizes."""

from __future__ import annotations

import httpx

from oris.cli.triage import render_table_health, table_health
from oris.client.metrics import parse_metrics
from oris.services import maintenance
from tests.api.helpers import ack, ok, poll, run
from tests.api.test_retention import age
from tests.api.test_scheduler import runtime_of

AGE = 'oris_runtime_oldest_finished_job_age_seconds{status="%s"}'


async def test_oldest_unpurged_job_and_sizes_are_exported_and_fall_after_a_purge(
    api: httpx.AsyncClient,
) -> None:
    rt = runtime_of(api)
    scrape = parse_metrics((await api.get("/metrics")).text)
    assert [scrape[AGE % s] for s in ("completed", "cancelled", "failed")] == [0, 0, 0]
    await run(api, "old-done")
    lease = await poll(api)
    await ack(api, "w1", lease["attempt_id"])
    await run(api, "old-cancelled")
    await ok(api, "POST", "/v1/jobs/old-cancelled/cancel", {})
    await age(rt, "old-done", 9)
    await age(rt, "old-cancelled", 2)
    scrape = parse_metrics((await api.get("/metrics")).text)
    assert 9 * 86_400 - 60 < scrape[AGE % "completed"] < 9 * 86_400 + 60
    assert 2 * 86_400 - 60 < scrape[AGE % "cancelled"] < 2 * 86_400 + 60
    assert scrape[AGE % "failed"] == 0
    assert scrape["oris_runtime_database_size_bytes"] > 0
    sizes = {k: v for k, v in scrape.items() if k.startswith("oris_runtime_table_size_bytes")}
    if rt.db.is_postgres:
        assert sizes['oris_runtime_table_size_bytes{table="runtime_jobs"}'] > 0
        assert scrape["oris_runtime_database_size_bytes"] == sum(sizes.values())
    else:
        assert sizes == {}, "SQLite reports the file size only (see docs/observability)"
    health = table_health(scrape)
    assert "completed 9.0d" in render_table_health(health)[0]

    await maintenance.sweep(rt)  # 7 days for completed: the old one goes
    scrape = parse_metrics((await api.get("/metrics")).text)
    assert scrape[AGE % "completed"] == 0
    assert scrape[AGE % "cancelled"] > 0, "cancelled jobs are kept 7 days"
