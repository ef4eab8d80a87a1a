"""Workflow registries the drills deploy as "releases" (loaded with ``oris worker --app``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from oris.worker import Context, PermanentError, Registry, builtin_registry


def _append(path: str, line: str) -> None:
    with Path(path).open("a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


def good_release() -> Registry:
    """The built-ins plus ``payments``, which completes."""
    registry = builtin_registry()

    @registry.workflow("payments")
    async def payments(ctx: Context, input: Any) -> Any:
        return await ctx.step("charge", lambda: {"charged": input})

    return registry


def bad_release() -> Registry:
    """The built-ins plus a broken ``payments``: every run fails for good."""
    registry = builtin_registry()

    @registry.workflow("payments")
    async def payments(ctx: Context, input: Any) -> Any:
        raise PermanentError("payments v2 rejects every card (bad release)")

    return registry


def ledger_steps() -> Registry:
    """``ledger_steps``: n steps, each sleeping and appending ``<thread> <step>`` to a ledger.

    A line per execution lets a drill prove that no finished step ran twice.
    """
    registry = builtin_registry()

    @registry.workflow("ledger_steps")
    async def run_steps(ctx: Context, input: Any) -> Any:
        steps = int(input.get("steps", 3))
        sleep_ms = int(input.get("sleep_ms", 200))
        ledger = str(input["ledger"])
        for index in range(1, steps + 1):
            name = f"step_{index}"

            async def execute(step: str = name) -> str:
                await asyncio.sleep(sleep_ms / 1000)
                _append(ledger, f"{ctx.thread_id} {step}")
                return step

            await ctx.step(name, execute)
        return {"steps": steps}

    return registry
