"""``oris incident`` and ``oris audit verify`` against a real server."""

from __future__ import annotations

import pytest

from tests.e2e.test_cli_operator import ack, api, lease, oris, oris_json, server

pytestmark = pytest.mark.e2e
__all__ = ["server"]


def test_incident_freeze_through_the_cli(server: str) -> None:
    api(server, "POST", "/v1/jobs/run", {"thread_id": "cli-freeze"})
    dispatch = lease(server, "echo")
    ack(server, dispatch, "failed")
    opened = oris_json(server, "incident", "open", "--reason", "error spike")
    assert opened["status"] == "open"
    assert oris_json(server, "incident", "status")["incident_id"] == opened["incident_id"]
    frozen = oris(server, "dlq", "replay", dispatch["attempt_id"])
    assert frozen.exit_code == 1
    assert "incident_freeze" in frozen.stderr
    allowed = oris(
        server, "dlq", "replay", dispatch["attempt_id"], "--override-reason", "fix verified"
    )
    assert allowed.exit_code == 0, allowed.output
    closed = oris_json(server, "incident", "close", "--reason", "mitigated")
    assert closed["status"] == "closed"
    assert oris(server, "incident", "status").stdout.strip() == "no incident is open"
    verified = oris(server, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit chain intact" in verified.stdout
