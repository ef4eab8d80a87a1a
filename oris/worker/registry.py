"""Workflow registry: names mapped to async functions, and loading one from ``module:attribute``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from oris.domain.errors import InvalidArgument
from oris.domain.validation import check_id
from oris.worker.context import Context

WorkflowFunction = Callable[[Context, Any], Awaitable[Any]]
RESERVED_PREFIX = "oris."


class Registry:
    """The workflows one worker can run; the worker polls only for these names."""

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowFunction] = {}

    def workflow(self, name: str) -> Callable[[WorkflowFunction], WorkflowFunction]:
        """Decorator: register ``async def fn(ctx, input)`` under ``name``."""

        def register(fn: WorkflowFunction) -> WorkflowFunction:
            self.add(name, fn)
            return fn

        return register

    def add(self, name: str, fn: WorkflowFunction) -> None:
        """Register ``fn`` under ``name``; a name may be registered once."""
        try:
            check_id("workflow name", name)
        except InvalidArgument as error:
            raise ValueError(f"invalid workflow name {name!r}: {error.message}") from None
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"workflow {name!r}: names starting with {RESERVED_PREFIX!r} are reserved "
                "for the runtime's own jobs (oris smoke)"
            )
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {name!r} must be an async function (async def)")
        if name in self._workflows:
            raise ValueError(f"workflow {name!r} is already registered")
        self._workflows[name] = fn

    def include(self, other: Registry) -> None:
        """Register every workflow of ``other`` here too (names must not clash)."""
        for name in other.names():
            found = other.get(name)
            assert found is not None
            self.add(name, found)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._workflows)

    def get(self, name: str) -> WorkflowFunction | None:
        """The function registered under ``name``, or ``None``."""
        return self._workflows.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._workflows)


class AppLoadError(Exception):
    """``--app`` does not name a registry; the message says what is wrong."""


def load_registry(spec: str) -> Registry:
    """Import ``module:attribute``: a ``Registry``, or a zero-argument callable returning one."""
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"--app must look like module:attribute, got {spec!r}")
    # Like other app servers, resolve modules from the directory the worker was started in.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AppLoadError(f"cannot import {module_name!r}: {error}") from None
    except Exception as error:
        raise AppLoadError(
            f"importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, Registry):
        return target
    if not callable(target) or inspect.iscoroutinefunction(target):
        raise AppLoadError(
            f"{spec!r} is neither a Registry nor a plain zero-argument function returning one"
        )
    try:
        built = target()
    except Exception as error:
        raise AppLoadError(f"calling {spec!r} raised {type(error).__name__}: {error}") from None
    if not isinstance(built, Registry):
        raise AppLoadError(f"{spec!r} returned {type(built).__name__}, expected a Registry")
    return built
