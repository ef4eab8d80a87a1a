"""The examples in docs/client.md run as written against a real ``oris serve`` and ``oris
worker`` (both backends), each as its own Python process with only ``ORIS_SERVER_URL`` set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oris.config import ServerSettings
from tests.support import ROOT, Process, oris_command, running_server, server_env

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "client.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[str]:
    """The python code blocks of docs/client.md, in order."""
    return _BLOCK.findall(DOC.read_text())


def test_the_guide_has_an_example_for_every_method() -> None:
    found = "\n".join(examples())
    for method in (
        "submit(",
        "submit_many(",
        ".get(",
        ".wait(",
        ".cancel(",
        ".replay(",
        ".list(",
        ".iter_jobs(",
        ".interrupts(",
        ".resume(",
        ".reject(",
        "AsyncClient",
    ):
        assert method in found, method


@pytest.fixture
def server(settings: ServerSettings, tmp_path: Path) -> Iterator[str]:
    """``oris serve`` plus one ``oris worker`` with the built-in workflows."""
    with running_server(settings, tmp_path) as url:
        worker = Process(
            [*oris_command(), "worker"],
            server_env(
                settings,
                ORIS_SERVER_URL=url,
                ORIS_WORKER_ID="docs-worker",
                ORIS_WORKER_CONCURRENCY="8",
                ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS="0.2",
                ORIS_WORKER_SHUTDOWN_GRACE_SECONDS="1",
            ),
            tmp_path / "worker.log",
        )
        try:
            yield url
        finally:
            worker.stop()


def test_every_example_in_the_client_guide_runs(server: str, tmp_path: Path) -> None:
    blocks = examples()
    assert len(blocks) >= 7
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}
    env["ORIS_SERVER_URL"] = server
    env["PYTHONPATH"] = str(ROOT)
    for index, code in enumerate(blocks, start=1):
        script = tmp_path / f"example_{index}.py"
        script.write_text(code)
        result = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"example {index} of docs/client.md failed:\n{code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert result.stdout.strip(), f"example {index} printed nothing"
