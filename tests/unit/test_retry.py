"""Retry policy validation and backoff arithmetic (upstream §7.1-7.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oris.domain.errors import InvalidArgument
from oris.domain.retry import RetryPolicy, RetryStrategy


@given(
    backoff=st.integers(1, 10_000_000),
    cap=st.one_of(st.none(), st.integers(1, 10_000_000)),
    multiplier=st.floats(1.0001, 10.0),
    attempt=st.integers(-5, 200),
)
def test_exponential_delay_follows_the_formula(
    backoff: int, cap: int | None, multiplier: float, attempt: int
) -> None:
    if cap is not None and cap < backoff:
        cap = backoff
    policy = RetryPolicy.parse(
        strategy="exponential",
        backoff_ms=backoff,
        max_retries=3,
        max_backoff_ms=cap,
        multiplier=multiplier,
    )
    n = max(attempt, 1)
    try:
        raw = backoff * multiplier ** (n - 1)
    except OverflowError:
        raw = float("inf")
    if cap is not None:
        raw = min(raw, cap)
    raw = min(raw, 365 * 24 * 3600 * 1000.0)
    assert policy.delay_ms(attempt) == max(round(raw), 1)
    if cap is not None:
        assert policy.delay_ms(attempt) <= cap


@given(backoff=st.integers(1, 10**9), attempt=st.integers(1, 1000), retries=st.integers(0, 50))
def test_fixed_delay_and_retry_budget(backoff: int, attempt: int, retries: int) -> None:
    policy = RetryPolicy.parse(
        strategy=" FIXED ", backoff_ms=backoff, max_retries=retries, multiplier=9.0
    )
    assert policy.strategy is RetryStrategy.FIXED
    assert policy.multiplier is None
    assert policy.delay_ms(attempt) == min(backoff, 365 * 24 * 3600 * 1000)
    assert policy.allows_retry_after(attempt) == (attempt <= retries)


def test_upstream_worked_example() -> None:
    policy = RetryPolicy.parse(
        strategy="exponential", backoff_ms=100, max_backoff_ms=250, multiplier=3.0, max_retries=2
    )
    assert [policy.delay_ms(1), policy.delay_ms(2)] == [100, 250]
    assert policy.allows_retry_after(2) and not policy.allows_retry_after(3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backoff_ms": 0}, "retry_policy.backoff_ms must be > 0"),
        ({"strategy": "linear"}, "retry_policy.strategy must be one of: fixed|exponential"),
        ({"max_backoff_ms": 0}, "retry_policy.max_backoff_ms must be > 0"),
        (
            {"max_backoff_ms": 5, "backoff_ms": 10},
            "retry_policy.max_backoff_ms must be >= retry_policy.backoff_ms",
        ),
        ({"multiplier": 1.0}, "retry_policy.multiplier must be > 1.0 for exponential backoff"),
        ({"max_retries": -1}, "retry_policy.max_retries must be >= 0"),
    ],
)
def test_invalid_policies_use_upstream_messages(fields: dict[str, object], message: str) -> None:
    raw: dict[str, object] = {
        "strategy": "exponential",
        "backoff_ms": 10,
        "max_retries": 1,
        **fields,
    }
    with pytest.raises(InvalidArgument) as raised:
        RetryPolicy.parse(**raw)  # type: ignore[arg-type]
    assert raised.value.message == message


def test_policy_round_trips_through_storage() -> None:
    policy = RetryPolicy.parse(strategy="exponential", backoff_ms=5, max_retries=2)
    assert RetryPolicy.from_json(policy.to_json()) == policy
    assert policy.multiplier == 2.0
