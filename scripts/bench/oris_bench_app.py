"""Workflows for ``oris worker --app oris_bench_app:registry`` used by the latency benchmark.

``bench_stamp`` is a no-op like ``echo`` that also appends ``<t_submit> <t_start> <thread_id>``
(epoch seconds) to ``$ORIS_BENCH_STAMP_FILE``; ``t_submit`` travels in the input. It measures
submit → handler start on the same clock as the client, including the HTTP hop to the worker.
"""

from __future__ import annotations

import os
import time
from typing import Any, TextIO

from oris.worker import Context, Registry

_stamp_file: TextIO | None = None


def _stamps() -> TextIO | None:
    global _stamp_file
    path = os.environ.get("ORIS_BENCH_STAMP_FILE")
    if _stamp_file is None and path:
        _stamp_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    return _stamp_file


async def bench_stamp(ctx: Context, input: Any) -> Any:
    """Record the handler start, then complete with no output."""
    started = time.time()
    submitted = input.get("t") if isinstance(input, dict) else None
    out = _stamps()
    if out is not None and isinstance(submitted, int | float):
        out.write(f"{submitted:.6f} {started:.6f} {ctx.thread_id}\n")
    return None


async def echo(ctx: Context, input: Any) -> Any:
    """Same as the built-in echo."""
    return {"output": input}


registry = Registry()
registry.add("bench_stamp", bench_stamp)
registry.add("echo", echo)
