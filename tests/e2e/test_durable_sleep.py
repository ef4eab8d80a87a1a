"""Durable sleep end to end: ``oris serve`` and ``oris worker`` as real processes, both backends.

``sleeper_app`` is loaded by the workers with ``--app``; its workflows write one ledger line per
step execution, which is how the tests count executions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oris.config import ServerSettings
from oris.worker import Context, Registry
from tests.e2e.test_worker_e2e import FAST_LEASES, Cluster, ledger_counts
from tests.support import running_server

pytestmark = pytest.mark.e2e

APP = "tests.e2e.test_durable_sleep:sleeper_app"
SLEEP_MS = 6000


def sleeper_app() -> Registry:
    """``napper`` (a step, a durable sleep, a step) and ``quick`` (one step)."""
    registry = Registry()

    def note(ledger: str, name: str, ctx: Context) -> dict[str, Any]:
        with Path(ledger).open("a", encoding="utf-8") as handle:
            handle.write(f"{name} {ctx.worker_id}\n")
        return {"worker_id": ctx.worker_id}

    @registry.workflow("napper")
    async def napper(ctx: Context, input: Any) -> Any:
        before = await ctx.step("before", note, input["ledger"], "before", ctx)
        await ctx.sleep(timedelta(milliseconds=input["sleep_ms"]))
        after = await ctx.step("after", note, input["ledger"], "after", ctx)
        return {"before": before["worker_id"], "after": after["worker_id"]}

    @registry.workflow("quick")
    async def quick(ctx: Context, input: Any) -> Any:
        return await ctx.step("only", note, input["ledger"], "quick", ctx)

    return registry


def _event_time(cluster: Cluster, thread_id: str, event_type: str) -> datetime:
    events = [e for e in cluster.detail(thread_id)["timeline"] if e["event_type"] == event_type]
    assert events, f"{thread_id} has no {event_type} event"
    return datetime.fromisoformat(events[-1]["created_at"])


def _worker(cluster: Cluster, worker_id: str) -> None:
    cluster.start_worker(worker_id, "--app", APP, ORIS_WORKER_CONCURRENCY="1")


def test_a_sleeping_workflow_frees_its_slot_and_resumes_after_the_sleep_on_another_worker(
    make_settings: Callable[..., ServerSettings], tmp_path: Path
) -> None:
    settings = make_settings(**FAST_LEASES)
    ledger = tmp_path / "ledger.txt"
    with running_server(settings, tmp_path) as url:
        cluster = Cluster(settings, tmp_path, url)
        try:
            _worker(cluster, "sleepy-1")
            cluster.run("nap", "napper", {"ledger": str(ledger), "sleep_ms": SLEEP_MS})
            sleeping = cluster.wait_status("nap", "scheduled")
            wake_at = datetime.fromisoformat(sleeping["run_at"])
            # The only slot of the only worker is free: another job runs during the sleep.
            cluster.run("other", "quick", {"ledger": str(ledger)})
            cluster.wait_status("other", "completed")
            assert _event_time(cluster, "other", "attempt_completed") < wake_at
            assert cluster.job("nap")["status"] == "scheduled"
            # The first worker goes away; the sleep continues on a new one.
            cluster.workers[0].stop()
            _worker(cluster, "sleepy-2")
            done = cluster.wait_status("nap", "completed", timeout=60)
            assert done["output"] == {"before": "sleepy-1", "after": "sleepy-2"}
            assert ledger_counts(ledger) == {"before": 1, "after": 1, "quick": 1}
            assert _event_time(cluster, "nap", "attempt_completed") >= wake_at
            detail = cluster.detail("nap")
            kinds = [e["event_type"] for e in detail["timeline"]]
            # A sleep costs no retry: only a lease lost on the way (the first worker stopping
            # just as the sleep ended) moves the attempt number on.
            assert [a["attempt_no"] for a in detail["attempts"]] == [
                1 + kinds.count("lease_expired")
            ]
            assert [e["event_type"] for e in detail["timeline"]].count("attempt_sleeping") == 1
        finally:
            cluster.close()


def test_a_sleep_survives_a_server_restart(
    make_settings: Callable[..., ServerSettings], tmp_path: Path
) -> None:
    settings = make_settings(**FAST_LEASES)
    ledger = tmp_path / "ledger.txt"
    with running_server(settings, tmp_path) as url:
        cluster = Cluster(settings, tmp_path, url)
        with contextlib.closing(cluster):
            _worker(cluster, "sleepy-a")
            cluster.run("nap", "napper", {"ledger": str(ledger), "sleep_ms": SLEEP_MS})
            cluster.wait_status("nap", "scheduled")
    # Nothing runs for a while: the server and its worker are gone.
    with running_server(settings, tmp_path) as url:
        cluster = Cluster(settings, tmp_path, url)
        with contextlib.closing(cluster):
            assert cluster.job("nap")["status"] in {"scheduled", "queued"}
            _worker(cluster, "sleepy-b")
            done = cluster.wait_status("nap", "completed", timeout=60)
    assert done["output"] == {"before": "sleepy-a", "after": "sleepy-b"}
    assert ledger_counts(ledger) == {"before": 1, "after": 1}
