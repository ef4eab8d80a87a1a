"""Measure how long the ``oris`` command takes to start (for docs/performance.md).

Usage: ``.venv/bin/python scripts/measure_cli_startup.py [--runs N]``

Prints the median (and min-max) wall and CPU time of ``oris --help`` and
``oris jobs list --help`` over N runs each, and the cumulative ``-X importtime`` of
``import oris.cli.main`` (median of N runs), plus the machine facts the figures depend on.
On a shared machine the wall time follows the load; the CPU time much less so.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _oris() -> list[str]:
    script = Path(sys.executable).with_name("oris")
    return [str(script)] if script.exists() else [sys.executable, "-m", "oris"]


def _run(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system) of each run of ``command``."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def _import_ms(runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import oris.cli.main"],
            check=True,
            capture_output=True,
            text=True,
        )
        for line in result.stderr.splitlines():
            parts = [part.strip() for part in line.split("|")]
            if len(parts) == 3 and parts[2] == "oris.cli.main":
                figures.append(int(parts[1]) / 1000)
    return figures


def _line(label: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [v * scale for v in values]
    return (
        f"{label:<32} median {statistics.median(scaled):7.0f} {unit}"
        f"  (min {min(scaled):.0f}, max {max(scaled):.0f}, {len(scaled)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(
        f"machine: {os.cpu_count()} CPU, {platform.machine()}, {platform.system()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(_line("import oris.cli.main", _import_ms(runs), "ms"))
    for words in (["--help"], ["jobs", "list", "--help"]):
        wall, cpu = _run([*_oris(), *words], runs)
        label = " ".join(["oris", *words])
        print(_line(f"{label} (wall)", wall, "ms", 1000))
        print(_line(f"{label} (CPU)", cpu, "ms", 1000))


if __name__ == "__main__":
    main()
