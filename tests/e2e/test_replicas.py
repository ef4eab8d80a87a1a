"""Several API processes on one database tell the same truth and never double-requeue."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from oris.config import ServerSettings
from tests.support import running_server, wait_until

pytestmark = pytest.mark.e2e


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported by {url}")


def test_two_replicas_share_one_queue(make_settings: object, tmp_path: Path) -> None:
    settings: ServerSettings = make_settings(  # type: ignore[operator]
        lease_ttl_seconds=1.0,
        lease_grace_seconds=0.0,
        maintenance_interval_seconds=0.05,
        metrics_count_interval_seconds=0.05,
    )
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_server(settings, tmp_path))
        second = stack.enter_context(running_server(settings, tmp_path))
        for index in range(6):
            target = first if index % 2 else second
            httpx.post(f"{target}/v1/jobs/run", json={"thread_id": f"r-{index}"}).raise_for_status()
        wait_until(
            lambda: (
                _metric(first, "oris_runtime_queue_depth")
                == _metric(second, "oris_runtime_queue_depth")
                == 6
            ),
            message="both replicas to count the six queued jobs",
        )

        # Leases taken through one replica and abandoned: both replicas sweep concurrently.
        for _ in range(6):
            httpx.post(f"{first}/v1/workers/poll", json={"worker_id": "doomed"}).raise_for_status()

        def requeued() -> bool:
            # Each process counts the leases it expired; the queue depth may be a count from
            # before the polls, so it alone does not show that the sweeps ran.
            expired = sum(_metric(r, "oris_runtime_leases_expired_total") for r in (first, second))
            return (
                expired >= 6
                and _metric(first, "oris_runtime_queue_depth") == 6
                and _metric(second, "oris_runtime_stale_leases") == 0
            )

        wait_until(requeued, timeout=30, message="both replicas to requeue the abandoned leases")
        time.sleep(0.5)  # several more sweeps in both processes; nothing may change
        expired_leases: list[str] = []
        for index in range(6):
            detail = httpx.get(f"{second}/v1/jobs/r-{index}/detail").json()["data"]
            expired = [
                e["details"]["lease_id"]
                for e in detail["timeline"]
                if e["event_type"] == "lease_expired"
            ]
            assert detail["attempts"][0]["attempt_no"] == 1 + len(expired)
            expired_leases += expired
        assert len(expired_leases) == 6, "every abandoned lease expired exactly once"
        assert len(set(expired_leases)) == 6, "a lease was requeued twice"
        expired_total = _metric(first, "oris_runtime_leases_expired_total") + _metric(
            second, "oris_runtime_leases_expired_total"
        )
        assert expired_total == len(expired_leases)

        # A long poll on one replica is woken by work queued through the other.
        answers: list[dict[str, object]] = []

        def long_poll() -> None:
            response = httpx.post(
                f"{first}/v1/workers/poll",
                json={"worker_id": "patient", "workflows": ["steps"], "wait_ms": 20_000},
                timeout=30,
            )
            answers.append(response.json()["data"])

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.3)
        httpx.post(
            f"{second}/v1/jobs/run", json={"thread_id": "cross", "workflow": "steps"}
        ).raise_for_status()
        poller.join(25)
        assert answers and answers[0]["decision"] == "dispatched"
        assert answers[0]["thread_id"] == "cross"
