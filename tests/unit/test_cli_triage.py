"""How triage reads the server's counter history and the scrapes (pure functions)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from oris.cli.triage import (
    ScrapeSample,
    ServerHistory,
    mask_dsn,
    mask_value,
    playbook,
    signals,
)

NOW_MS = 10_000_000


def _history(counters: dict[str, list[list[float]]], depth: list[list[float]]) -> ServerHistory:
    data: dict[str, Any] = {
        "now_ms": NOW_MS,
        "process_started_at_ms": NOW_MS - 3_600_000,
        "resolution_seconds": 5,
        "counters": counters,
        "gauges": {"oris_runtime_queue_depth": depth},
    }
    parsed = ServerHistory.parse(data)
    assert parsed is not None
    return parsed


def _at(seconds_ago: float) -> float:
    return NOW_MS - seconds_ago * 1000


def test_an_increase_counts_the_slots_inside_the_window_only() -> None:
    history = _history(
        {
            'oris_runtime_backpressure_total{reason="worker_limit"}': [
                [_at(900), 100],  # before the 10-minute window
                [_at(500), 20],
                [_at(10), 10],
            ],
            'oris_runtime_backpressure_total{reason="tenant_limit"}': [[_at(100), 1]],
        },
        [[_at(20), 1, 3]],
    )
    assert history.increase("oris_runtime_backpressure_total", 600) == 31
    assert history.increase('oris_runtime_backpressure_total{reason="worker_limit"}', 600) == 30
    assert history.increase('oris_runtime_backpressure_total{reason="worker_limit"}', 60) == 10
    assert history.gauge_range("oris_runtime_queue_depth", 300) == (1, 3)
    assert history.gauge_range("oris_runtime_queue_depth", 5) is None
    assert history.covered(600) == 600


def test_backpressure_long_ago_is_not_sustained_backpressure_now() -> None:
    scrape = {
        "oris_runtime_queue_depth": 1.0,
        'oris_runtime_backpressure_total{reason="worker_limit"}': 130.0,
        "oris_runtime_dispatches_total": 5.0,
    }
    old = _history(
        {'oris_runtime_backpressure_total{reason="worker_limit"}': [[_at(900), 130]]},
        [[_at(10), 1, 1]],
    )
    found = {s.name: s for s in signals(scrape, old)}
    assert found["oris_runtime_backpressure_total"].increase == 0
    assert not found["oris_runtime_backpressure_total"].breached
    recent = _history(
        {
            'oris_runtime_backpressure_total{reason="worker_limit"}': [[_at(240), 130]],
            "oris_runtime_dispatches_total": [[_at(250), 5]],
        },
        [[_at(240), 1, 2]],
    )
    found = {s.name: s for s in signals(scrape, recent)}
    backpressure = found["oris_runtime_backpressure_total"]
    assert (backpressure.value, backpressure.increase, backpressure.breached) == (130, 130, True)
    assert backpressure.over_window() == "+130 in 10m"
    assert found["oris_runtime_queue_depth"].breached is False  # a dispatch in the last 5m
    assert playbook(True, {}, list(found.values()), 0, 1) == "Sustained backpressure"


def test_queued_for_five_minutes_without_a_dispatch_is_no_dispatch() -> None:
    scrape = {"oris_runtime_queue_depth": 4.0, "oris_runtime_dispatches_total": 9.0}
    history = _history(
        {"oris_runtime_dispatches_total": [[_at(400), 9]]},
        [[_at(290), 2, 3], [_at(10), 4, 4]],
    )
    found = {s.name: s for s in signals(scrape, history)}
    assert found["oris_runtime_queue_depth"].breached is True
    assert found["oris_runtime_dispatches_total"].increase == 0
    assert playbook(True, {}, list(found.values()), 0, 1) == "Queue depth rising, no dispatch"


def test_without_history_the_two_scrapes_are_the_window() -> None:
    first = {'oris_runtime_backpressure_total{reason="worker_limit"}': 10.0}
    second = {
        'oris_runtime_backpressure_total{reason="worker_limit"}': 40.0,
        "oris_runtime_queue_depth": 1.0,
    }
    sample = ScrapeSample(first, second, 2.0)
    found = {s.name: s for s in signals(second, sample)}
    backpressure = found["oris_runtime_backpressure_total"]
    assert (backpressure.increase, backpressure.basis, backpressure.breached) == (
        30,
        "sample",
        True,
    )
    assert backpressure.over_window() == "+30 in 10m, 2s seen"


def test_secrets_are_masked_and_the_rest_kept() -> None:
    assert mask_value("ORIS_API_TOKEN", "t0ken") == "***"
    assert mask_value("ORIS_API_KEY", "s3cret") == "***"
    assert mask_value("ORIS_API_AUTH_API_KEY", "s3cret") == "***"
    assert mask_value("ORIS_API_KEY_ID", "key-1") == "key-1"
    assert mask_value("ORIS_SERVER_URL", "http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert mask_value("ORIS_POSTGRES_DSN", "postgresql://u:pw@db:5432/x") == (
        "postgresql://u:***@db:5432/x"
    )
    assert mask_dsn("host=db user=u password=pw dbname=x") == "host=db user=u password=*** dbname=x"
    assert mask_dsn("postgresql://u@db/x") == "postgresql://u@db/x"


def test_two_bundles_of_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from oris.cli.triage import evidence_folder

    when = time.gmtime(1_800_000_000)
    first = evidence_folder(tmp_path, when)
    first.mkdir()
    second = evidence_folder(tmp_path, when)
    assert first.name == "triage-20270115T080000Z"
    assert second.name == "triage-20270115T080000Z-2"
