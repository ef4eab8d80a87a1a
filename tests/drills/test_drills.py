"""Every drill, time-scaled, on both backends: the playbook happens and recovers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from oris.drills.catalog import DRILLS
from tests.support import oris_command, require_postgres

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill_passes(name: str, backend: str, tmp_path: Path) -> None:
    drill = DRILLS[name]
    if drill.postgres_only and backend != "postgres":
        pytest.skip("PostgreSQL-only drill")
    args = [
        *oris_command(),
        "drill",
        "run",
        name,
        "--backend",
        backend,
        "--workdir",
        str(tmp_path),
        "--report",
        str(tmp_path / "report.json"),
        "--json",
    ]
    if backend == "postgres":
        args += ["--dsn", require_postgres()]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    document = json.loads((tmp_path / "report.json").read_text())
    report = document["drills"][0]
    failed = [e for e in report["expectations"] if not e["ok"]]
    assert result.returncode == 0 and not failed, f"{failed}\n{result.stderr[-3000:]}"
    assert report["passed"] is True
    assert {"before", "after"} <= set(report["phases"])
    # With --json, stdout is the report alone and the progress (signal tables) goes to stderr.
    assert json.loads(result.stdout) == document
    assert "oris_runtime_queue_depth" in result.stderr


def test_drill_list_names_every_playbook() -> None:
    result = subprocess.run(
        [*oris_command(), "drill", "list"], capture_output=True, text=True, check=True
    )
    for name in DRILLS:
        assert name in result.stdout


def test_unknown_drill_is_a_usage_error() -> None:
    result = subprocess.run(
        [*oris_command(), "drill", "run", "nope"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "unknown drill" in result.stderr
