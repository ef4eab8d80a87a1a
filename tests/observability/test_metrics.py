"""Metrics move as documented, and every metric the alerts and dashboard use is exported."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oris.api.app import create_app
from oris.config import ServerSettings
from oris.drills.proxy import TcpProxy
from oris.services import maintenance
from tests.api.helpers import ack, fails, ok, poll, run
from tests.api.test_scheduler import force_expire, runtime_of
from tests.bench.test_explain_hot_paths import captured
from tests.support import drop_schema, lifespan_client, require_postgres

OBSERVABILITY = Path(__file__).resolve().parents[2] / "docs" / "observability"
POSTGRES_ONLY = {"oris_runtime_table_dead_tuples", "oris_runtime_oldest_transaction_age_seconds"}


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def exported_names(text: str) -> set[str]:
    """Every sample name, with histogram suffixes too."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def referenced_names() -> set[str]:
    """Metric names used by the alert rules and the dashboard."""
    text = (OBSERVABILITY / "prometheus-alert-rules.yml").read_text()
    text += (OBSERVABILITY / "runtime-dashboard.json").read_text()
    return set(re.findall(r"oris_runtime_[a-z_]+", text))


async def scripted_workload(api: httpx.AsyncClient) -> None:
    """Touch every path that moves a metric."""
    rt = runtime_of(api)
    for index in range(4):
        await run(api, f"wl-{index}", tenant_id="acme")
    await run(api, "wl-approval", workflow="approval")
    first = await poll(api, "w1", tenant_max_active_leases=1)
    throttled = await poll(api, "w2", tenant_max_active_leases=1, workflows=["echo"])
    assert throttled["reason"] == "tenant_limit"
    assert (await poll(api, "w1", max_active_leases=1))["reason"] == "worker_limit"
    await fails(api, "POST", "/v1/workers/intruder/heartbeat", 409, {"lease_id": first["lease_id"]})
    await force_expire(rt, first["lease_id"])
    await maintenance.sweep(rt)
    recovered = await poll(api, "w3", workflows=["echo"])
    await ack(api, "w3", recovered["attempt_id"], status="failed")
    second = await poll(api, "w3", workflows=["echo"])
    await ack(api, "w3", second["attempt_id"])
    approval = await poll(api, "w4", workflows=["approval"])
    await ack(api, "w4", approval["attempt_id"], status="interrupted", interrupt={"value": "ok?"})
    await maintenance.sweep(rt)


async def test_metrics_move_as_documented(api: httpx.AsyncClient) -> None:
    before = samples((await api.get("/metrics")).text)
    assert before["oris_runtime_queue_depth"] == 0
    await scripted_workload(api)
    after = samples((await api.get("/metrics")).text)
    assert after["oris_runtime_queue_depth"] == 2
    assert after['oris_runtime_backpressure_total{reason="tenant_limit"}'] == 1
    assert after['oris_runtime_backpressure_total{reason="worker_limit"}'] == 1
    assert after['oris_runtime_terminal_acks_total{status="failed"}'] == 1
    assert after['oris_runtime_terminal_acks_total{status="completed"}'] == 1
    assert after["oris_runtime_terminal_error_rate"] == 0.5
    assert after["oris_runtime_lease_conflicts_total"] == 1
    assert after["oris_runtime_recovery_latency_ms_count"] == 1
    assert after["oris_runtime_recovery_latency_ms_sum"] >= 20_000, (
        "measured from the lease's expiry"
    )
    assert after["oris_runtime_dispatches_total"] == 4
    assert after["oris_runtime_leases_expired_total"] == 1
    assert after['oris_runtime_dlq_depth{replay_status="pending"}'] == 1
    assert after["oris_runtime_interrupts_pending"] == 1
    assert after['oris_runtime_attempts{status="queued"}'] == 2
    assert after["oris_runtime_stale_leases"] == 0
    assert after["oris_runtime_database_up"] == 1
    assert after["oris_runtime_workers_seen"] == 4
    workers = (await api.get("/v1/workers")).json()["data"]["workers"]
    assert {w["worker_id"] for w in workers} == {"w1", "w2", "w3", "w4"}
    assert (
        after[
            'oris_runtime_http_requests_total{method="POST",route="/v1/workers/poll",status_class="2xx"}'
        ]
        >= 6
    )


async def test_every_metric_the_alerts_and_dashboard_use_is_exported(
    api: httpx.AsyncClient, backend: str
) -> None:
    await scripted_workload(api)
    await api.get("/v1/jobs/none")
    exported = exported_names((await api.get("/metrics")).text)
    missing = {
        name
        for name in referenced_names()
        if name not in exported and not (backend == "sqlite" and name in POSTGRES_ONLY)
    }
    assert missing == set()


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (CI installs Debian's prometheus)",
)
def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", "prometheus-alert-rules.yml"],
        cwd=OBSERVABILITY,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", "alert-rules-test.yml"],
        cwd=OBSERVABILITY,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    alerts = set(
        re.findall(r"alert: (\w+)", (OBSERVABILITY / "prometheus-alert-rules.yml").read_text())
    )
    tested = set(
        re.findall(r"alertname: (\w+)", (OBSERVABILITY / "alert-rules-test.yml").read_text())
    )
    assert alerts == tested, "every alert has a promtool unit test"


async def test_scrape_reports_database_down_without_failing(
    backend: str, make_settings: object, tmp_path: Path
) -> None:
    """The database really goes away: PostgreSQL behind a proxy that is cut (every open
    connection dropped, new ones refused); SQLite's file replaced by a directory."""
    proxy: TcpProxy | None = None
    # No maintenance passes while the file is swapped: on SQLite each one opens connections,
    # and one opened between the rename and the mkdir would create the file again.
    overrides: dict[str, object] = {
        "metrics_count_interval_seconds": 0,
        "maintenance_interval_seconds": 3600,
    }
    if backend == "postgres":
        proxy = TcpProxy.for_dsn(require_postgres())
        await proxy.start()
        overrides["postgres_dsn"] = proxy.routed(require_postgres())
    settings: ServerSettings = make_settings(**overrides)  # type: ignore[operator]
    try:
        async with contextlib.asynccontextmanager(lifespan_client)(create_app(settings)) as api:
            before = samples((await api.get("/metrics")).text)
            assert before["oris_runtime_database_up"] == 1
            assert any(name.startswith("oris_runtime_dlq_depth") for name in before)
            if proxy is not None:
                await proxy.stop()
            else:
                database = Path(settings.sqlite_db)
                database.rename(tmp_path / "moved-away.db")
                database.mkdir()
            response = await api.get("/metrics")
            assert response.status_code == 200
            scraped = samples(response.text)
            assert scraped["oris_runtime_database_up"] == 0
            assert not any(name.startswith("oris_runtime_dlq_depth") for name in scraped)
    finally:
        if proxy is not None:
            # The settings reach PostgreSQL through the proxy: drop the test's schema while
            # it forwards again.
            await proxy.start()
            await asyncio.to_thread(drop_schema, settings)
            await proxy.stop()


def counts_attempts(statements: list[tuple[str, object]]) -> bool:
    """Whether any statement counts rows of the attempts table."""
    return any(
        re.search(r"count\(.*\bFROM runtime_attempts\b", sql, re.IGNORECASE | re.DOTALL)
        for sql, _ in statements
    )


async def test_scrape_counts_the_queue_itself_without_the_refresher(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "counted-1")
    with captured(runtime_of(api)) as statements:
        scraped = samples((await api.get("/metrics")).text)
    assert scraped["oris_runtime_queue_depth"] == 1
    assert scraped["oris_runtime_counts_age_seconds"] == 0
    assert counts_attempts(statements)


async def test_scrape_serves_the_refreshed_counts_without_counting(
    make_settings: object,
) -> None:
    settings: ServerSettings = make_settings(  # type: ignore[operator]
        metrics_count_interval_seconds=0.05, maintenance_interval_seconds=3600
    )
    async for api in lifespan_client(create_app(settings)):
        for index in range(3):
            await run(api, f"refreshed-{index}")
        for _ in range(400):  # the refresher runs every 0.05 s; bounded wait
            scraped = samples((await api.get("/metrics")).text)
            counted = scraped["oris_runtime_queue_depth"] == 3
            if counted and scraped["oris_runtime_counts_age_seconds"] > 0:
                break
            await asyncio.sleep(0.05)
        assert scraped["oris_runtime_queue_depth"] == 3
        assert scraped['oris_runtime_attempts{status="queued"}'] == 3
        # Counted before the scrape began, by the refresher (a scrape's own count reads 0).
        assert scraped["oris_runtime_counts_age_seconds"] > 0
        assert scraped["oris_runtime_database_up"] == 1


@pytest.mark.parametrize(("bound_seconds", "surfaced"), [(0, 1), (3600, 0)])
async def test_a_lease_kept_alive_after_its_outcome_was_decided_is_surfaced(
    make_settings: object, bound_seconds: float, surfaced: int
) -> None:
    settings: ServerSettings = make_settings(  # type: ignore[operator]
        unacked_finished_bound_seconds=bound_seconds
    )
    async for api in lifespan_client(create_app(settings, run_maintenance=False)):
        await run(api, "settled-1")
        await run(api, "working-1")
        first, second = (await poll(api, "w1", limit=2))["dispatches"]
        beat = "/v1/workers/w1/heartbeat"
        await ok(api, "POST", beat, {"lease_id": second["lease_id"]})
        await ok(api, "POST", beat, {"lease_id": first["lease_id"], "settling": True})
        await ok(api, "POST", beat, {"lease_id": first["lease_id"]})  # the mark stays
        scraped = samples((await api.get("/metrics")).text)
        assert scraped["oris_runtime_unacked_finished_attempts"] == surfaced
        workers = await ok(api, "GET", "/v1/workers")
        assert workers["unacked_finished_count"] == surfaced
        listed = workers["unacked_finished_attempts"]
        assert [item["attempt_id"] for item in listed] == [first["attempt_id"]][:surfaced]
        if surfaced:
            assert listed[0]["worker_id"] == "w1"
            assert listed[0]["lease_id"] == first["lease_id"]
            assert listed[0]["lease_version"] == 3
        await ack(api, "w1", first["attempt_id"])  # acked at last: nothing left to surface
        scraped = samples((await api.get("/metrics")).text)
        assert scraped["oris_runtime_unacked_finished_attempts"] == 0
        assert (await ok(api, "GET", "/v1/workers"))["unacked_finished_attempts"] == []


async def test_the_history_holds_every_counter_increase_and_the_queue_depth(
    api: httpx.AsyncClient,
) -> None:
    await scripted_workload(api)
    scraped = samples((await api.get("/metrics")).text)
    response = await api.get("/v1/metrics/history")
    assert response.status_code == 200
    history = response.json()["data"]
    assert history["resolution_seconds"] == 5 and history["horizon_seconds"] == 3600
    counters = history["counters"]
    # The process started in this test, so each series' slots add up to the counter itself.
    for name in (
        'oris_runtime_backpressure_total{reason="tenant_limit"}',
        'oris_runtime_backpressure_total{reason="worker_limit"}',
        'oris_runtime_terminal_acks_total{status="failed"}',
        'oris_runtime_terminal_acks_total{status="completed"}',
        "oris_runtime_dispatches_total",
        "oris_runtime_lease_conflicts_total",
        "oris_runtime_lease_operations_total",
        "oris_runtime_leases_expired_total",
        "oris_runtime_recovery_latency_ms_count",
        'oris_runtime_recovery_latency_ms_bucket{le="+Inf"}',
        'oris_runtime_recovery_latency_ms_bucket{le="60000"}',
    ):
        assert sum(slot[1] for slot in counters[name]) == scraped[name], name
    for slots in counters.values():
        assert all(slot[0] % 5000 == 0 and slot[0] <= history["now_ms"] for slot in slots)
    depth = history["gauges"]["oris_runtime_queue_depth"]
    assert depth[-1][2] == scraped["oris_runtime_queue_depth"] == 2


def test_series_history_keeps_slots_for_its_horizon_only() -> None:
    from oris.observability.metrics import SeriesHistory

    now = [1000.0]
    history = SeriesHistory(resolution_seconds=5, horizon_seconds=60, clock=lambda: now[0])
    history.add("c")
    history.add("c", 2)
    history.add("c", 0)  # no movement, no slot
    history.observe("g", 3)
    history.observe("g", 1)
    now[0] = 1007.0
    history.add("c")
    history.observe("g", 4)
    exported = history.export()
    assert exported["counters"] == {"c": [[1_000_000, 3], [1_005_000, 1]]}
    assert exported["gauges"] == {"g": [[1_000_000, 1, 3], [1_005_000, 4, 4]]}
    now[0] = 1066.0  # the first slot now lies wholly before the horizon
    assert history.export()["counters"] == {"c": [[1_005_000, 1]]}
    now[0] = 2000.0
    assert history.export()["counters"] == {} and history.export()["gauges"] == {}
