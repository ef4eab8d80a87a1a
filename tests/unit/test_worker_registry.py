"""Registry rules, ``--app`` loading, the backoff and the ack's error body (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from oris.domain.validation import MAX_DURATION_MS
from oris.worker import Context, PermanentError, RetryableError, WorkflowError
from oris.worker.attempt import dedupe_token, error_body
from oris.worker.backoff import Backoff
from oris.worker.builtins import builtin_registry
from oris.worker.registry import AppLoadError, Registry, load_registry

BUILTINS = ["approval", "echo", "fail", "flaky", "side_effect", "sleep", "steps"]


def make_registry() -> Registry:
    """A factory for ``load_registry`` to call."""
    registry = Registry()

    @registry.workflow("custom.flow")
    async def flow(ctx: Context, input: Any) -> Any:
        return input

    return registry


def not_a_registry() -> int:
    """A factory returning the wrong type."""
    return 1


def test_decorator_registers_and_names_are_sorted() -> None:
    registry = make_registry()

    @registry.workflow("a-first")
    async def first(ctx: Context, input: Any) -> Any:
        return None

    assert registry.names() == ["a-first", "custom.flow"]
    assert registry.get("a-first") is first
    assert "custom.flow" in registry
    assert registry.get("missing") is None


def test_a_name_is_registered_once() -> None:
    registry = make_registry()

    async def again(ctx: Context, input: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="already registered"):
        registry.add("custom.flow", again)


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "slash/name"])
def test_names_the_api_would_refuse_are_refused(name: str) -> None:
    async def flow(ctx: Context, input: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="invalid workflow name"):
        Registry().add(name, flow)


def test_only_async_functions_are_workflows() -> None:
    def sync_flow(ctx: Context, input: Any) -> Any:
        return None

    with pytest.raises(TypeError, match="async"):
        Registry().add("sync", sync_flow)


def test_include_merges_registries() -> None:
    registry = make_registry()
    registry.include(builtin_registry())
    assert registry.names() == sorted([*BUILTINS, "custom.flow"])


def test_builtin_registry_has_exactly_the_documented_workflows() -> None:
    assert builtin_registry().names() == BUILTINS
    assert builtin_registry() is not builtin_registry()


def test_load_registry_accepts_an_instance_or_a_factory() -> None:
    assert load_registry("oris.worker.builtins:builtin_registry").names() == BUILTINS
    assert load_registry(f"{__name__}:make_registry").names() == ["custom.flow"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "module:attribute"),
        (":attr", "module:attribute"),
        ("module:", "module:attribute"),
        ("surely_not_a_module_xyz:app", "cannot import"),
        (f"{__name__}:missing", "has no attribute"),
        (f"{__name__}:BUILTINS", "neither a Registry"),
        (f"{__name__}:not_a_registry", "expected a Registry"),
        ("oris.worker.builtins:echo", "neither a Registry"),
    ],
)
def test_load_registry_explains_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        load_registry(spec)


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.1, 0.5, jitter=lambda low, high: high)
    assert [backoff.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next_delay() == 0.1


def test_backoff_jitter_stays_within_half_to_full_delay() -> None:
    backoff = Backoff(1.0, 1.0)
    assert all(0.5 <= backoff.next_delay() <= 1.0 for _ in range(50))


def test_error_body_says_whether_a_retry_may_help() -> None:
    assert error_body(RetryableError("later", delay_ms=250)) == {
        "message": "later",
        "type": "RetryableError",
        "retryable": True,
        "retry_delay_ms": 250,
    }
    assert error_body(PermanentError("never"))["retryable"] is False
    assert error_body(WorkflowError("bad step"))["retryable"] is False
    unexpected = error_body(KeyError("k"))
    assert unexpected["retryable"] is True
    assert unexpected["type"] == "KeyError"
    assert "retry_delay_ms" not in unexpected
    assert error_body(ValueError())["message"] == "ValueError"


def test_error_body_keeps_the_delay_hint_within_the_servers_range() -> None:
    hint = error_body(RetryableError("much later", delay_ms=2**63))["retry_delay_ms"]
    assert hint == MAX_DURATION_MS


def test_dedupe_tokens_are_stable_and_bounded() -> None:
    assert dedupe_token("attempt-x", 2, "load") == "attempt-x:2:load"
    long_token = dedupe_token("attempt-" + "t" * 160, 1, "s" * 128)
    assert len(long_token) <= 256
    assert long_token == dedupe_token("attempt-" + "t" * 160, 1, "s" * 128)
    assert long_token != dedupe_token("attempt-" + "t" * 160, 2, "s" * 128)


async def _noop(ctx: Context, input: Any) -> Any:
    return None


def test_declared_defaults_are_kept_and_sent_only_for_workflows_that_declare_them() -> None:
    registry = Registry()
    policy = {"strategy": "exponential", "backoff_ms": 100, "max_retries": 3, "multiplier": 3.0}
    registry.add("billing", _noop, retry_policy=policy, timeout_ms=60_000)
    registry.add("plain", _noop)
    registry.add("timed", _noop, timeout_ms=5)
    assert registry.wire_defaults() == {
        "billing": {"retry_policy": policy, "timeout_ms": 60_000},
        "timed": {"timeout_ms": 5},
    }
    combined = Registry()
    combined.include(registry)
    assert combined.wire_defaults() == registry.wire_defaults()
    assert Registry().wire_defaults() == {}


@pytest.mark.parametrize(
    ("retry_policy", "timeout_ms", "message"),
    [
        ({"strategy": "sometimes", "backoff_ms": 1, "max_retries": 1}, None, "strategy"),
        ({"strategy": "fixed", "backoff_ms": 0, "max_retries": 1}, None, "backoff_ms must be > 0"),
        (
            {"strategy": "fixed", "backoff_ms": 1},
            None,
            "needs strategy, backoff_ms and max_retries",
        ),
        ({"strategy": "fixed", "backoff_ms": "1", "max_retries": 1}, None, "must be an integer"),
        ({"strategy": "fixed", "backoff_ms": 1, "max_retries": 1, "jitter": 1}, None, "unknown"),
        (None, 0, "timeout_ms must be a positive integer"),
        (None, 1.5, "timeout_ms must be a positive integer"),
    ],
)
def test_bad_defaults_are_refused_when_the_workflow_is_registered(
    retry_policy: dict[str, Any] | None, timeout_ms: Any, message: str
) -> None:
    registry = Registry()
    with pytest.raises(ValueError, match=message):
        registry.workflow("wf", retry_policy=retry_policy, timeout_ms=timeout_ms)(_noop)
    assert "wf" not in registry
