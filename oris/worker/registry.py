"""Workflow registry: names mapped to async functions, and loading one from ``module:attribute``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from oris.domain.errors import InvalidArgument
from oris.domain.retry import RetryPolicy
from oris.domain.validation import check_id
from oris.worker.context import Context

WorkflowFunction = Callable[[Context, Any], Awaitable[Any]]
RESERVED_PREFIX = "oris."
_POLICY_KEYS = ("strategy", "backoff_ms", "max_retries", "max_backoff_ms", "multiplier")


@dataclass(frozen=True, slots=True)
class WorkflowDefaults:
    """What a workflow declares for jobs that do not say: a retry policy, an execution timeout.

    The worker sends them with its polls; the server applies them to an attempt it leases to
    this worker when the job has no policy (or no timeout) of its own."""

    retry_policy: dict[str, Any] | None = None
    timeout_ms: int | None = None

    def wire(self) -> dict[str, Any]:
        """The ``workflow_defaults`` entry of a poll."""
        entry: dict[str, Any] = {}
        if self.retry_policy is not None:
            entry["retry_policy"] = dict(self.retry_policy)
        if self.timeout_ms is not None:
            entry["timeout_ms"] = self.timeout_ms
        return entry


def _defaults(
    name: str, retry_policy: Mapping[str, Any] | None, timeout_ms: int | None
) -> WorkflowDefaults | None:
    """Validated defaults (the server's rules, checked at registration), or None."""
    if retry_policy is None and timeout_ms is None:
        return None
    policy: dict[str, Any] | None = None
    if retry_policy is not None:
        unknown = set(retry_policy) - set(_POLICY_KEYS)
        if unknown:
            raise ValueError(f"workflow {name!r}: unknown retry_policy keys {sorted(unknown)}")
        policy = {k: retry_policy[k] for k in _POLICY_KEYS if retry_policy.get(k) is not None}
        for key in ("backoff_ms", "max_retries", "max_backoff_ms"):
            if key in policy and (type(policy[key]) is not int):
                raise ValueError(f"workflow {name!r}: retry_policy.{key} must be an integer")
        required = ("backoff_ms", "max_retries")
        if not isinstance(policy.get("strategy"), str) or any(k not in policy for k in required):
            raise ValueError(
                f"workflow {name!r}: retry_policy needs strategy, backoff_ms and max_retries"
            )
        try:
            RetryPolicy.parse(
                strategy=policy["strategy"],
                backoff_ms=policy["backoff_ms"],
                max_retries=policy["max_retries"],
                max_backoff_ms=policy.get("max_backoff_ms"),
                multiplier=policy.get("multiplier"),
            )
        except InvalidArgument as error:
            raise ValueError(f"workflow {name!r}: {error.message}") from None
    if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms <= 0):
        raise ValueError(f"workflow {name!r}: timeout_ms must be a positive integer")
    return WorkflowDefaults(policy, timeout_ms)


class Registry:
    """The workflows one worker can run; the worker polls only for these names."""

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowFunction] = {}
        self._defaults: dict[str, WorkflowDefaults] = {}

    def workflow(
        self,
        name: str,
        *,
        retry_policy: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> Callable[[WorkflowFunction], WorkflowFunction]:
        """Decorator: register ``async def fn(ctx, input)`` under ``name``.

        ``retry_policy`` (as a job's: ``strategy``, ``backoff_ms``, ``max_retries``, optional
        ``max_backoff_ms`` and ``multiplier``) and ``timeout_ms`` apply to jobs of this workflow
        that do not carry their own; a job's own policy or timeout always wins."""

        def register(fn: WorkflowFunction) -> WorkflowFunction:
            self.add(name, fn, retry_policy=retry_policy, timeout_ms=timeout_ms)
            return fn

        return register

    def add(
        self,
        name: str,
        fn: WorkflowFunction,
        *,
        retry_policy: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> None:
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
        defaults = _defaults(name, retry_policy, timeout_ms)
        self._workflows[name] = fn
        if defaults is not None:
            self._defaults[name] = defaults

    def include(self, other: Registry) -> None:
        """Register every workflow of ``other`` here too (names must not clash)."""
        for name in other.names():
            found = other.get(name)
            assert found is not None
            declared = other.defaults_of(name)
            self.add(
                name,
                found,
                retry_policy=None if declared is None else declared.retry_policy,
                timeout_ms=None if declared is None else declared.timeout_ms,
            )

    def defaults_of(self, name: str) -> WorkflowDefaults | None:
        """The defaults ``name`` declared, if any."""
        return self._defaults.get(name)

    def wire_defaults(self) -> dict[str, dict[str, Any]]:
        """``workflow_defaults`` for a poll: the workflows that declared any."""
        return {name: self._defaults[name].wire() for name in sorted(self._defaults)}

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
