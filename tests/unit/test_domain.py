"""Pure rules: ids, trace context, status mapping, metric rendering."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oris.api.envelope import request_id_from
from oris.domain.errors import InvalidArgument
from oris.domain.states import AttemptStatus, JobStatus, job_status_for
from oris.domain.trace import TraceContext
from oris.domain.validation import check_lease_ttl, clamp_limit, optional_id, require_id
from oris.observability.metrics import DatabaseGauges, RuntimeMetrics, WindowRatio


def test_every_attempt_status_maps_to_a_job_status() -> None:
    # "scheduled" is a queued attempt that is not due yet: the only status not mapped.
    assert {job_status_for(s) for s in AttemptStatus} == set(JobStatus) - {JobStatus.SCHEDULED}
    assert job_status_for(AttemptStatus.LEASED) is JobStatus.RUNNING


def test_ids_are_bounded_in_length_and_charset() -> None:
    assert require_id("thread_id", "a-b_c.d:e") == "a-b_c.d:e"
    with pytest.raises(InvalidArgument):
        require_id("thread_id", "")
    with pytest.raises(InvalidArgument):
        require_id("thread_id", "x" * 129)
    assert optional_id("tenant_id", "  ") is None
    assert optional_id("tenant_id", " acme ") == "acme"


def test_limits_and_ttls() -> None:
    assert clamp_limit(None, default=50, maximum=200) == 50
    assert clamp_limit(999, default=50, maximum=200) == 200
    with pytest.raises(InvalidArgument):
        clamp_limit(0, default=50, maximum=200)
    assert check_lease_ttl(None, 30.0) == 30.0
    with pytest.raises(InvalidArgument):
        check_lease_ttl(3601, 30.0)


def test_traceparent_is_continued_or_started() -> None:
    incoming = "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"
    context = TraceContext.start(incoming)
    assert context.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert context.parent_span_id == "b7ad6b7169203331"
    assert context.span_id != context.parent_span_id
    child = context.child()
    assert child.trace_id == context.trace_id and child.parent_span_id == context.span_id
    fresh = TraceContext.start(None)
    assert fresh.parent_span_id is None and len(fresh.trace_id) == 32 and fresh.flags == "01"


@pytest.mark.parametrize(
    "bad",
    [
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-xyz-b7ad6b7169203331-01",
        "garbage",
    ],
)
def test_malformed_traceparent_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        TraceContext.start(bad)
    assert raised.value.message.startswith("traceparent must use format 00-")


def test_request_ids() -> None:
    assert request_id_from(" abc-1 ") == "abc-1"
    assert request_id_from("bad id") != "bad id"
    assert request_id_from("x" * 129) != "x" * 129


def test_window_ratio_forgets_old_events() -> None:
    window = WindowRatio(window_seconds=10)
    window.add(1, 1, at=0.0)
    window.add(0, 3, at=8.0)
    assert window.value(at=9.0) == 0.25
    assert window.value(at=15.0) == 0.0


def test_exposition_parses_and_keeps_upstream_families() -> None:
    metrics = RuntimeMetrics()
    metrics.lease_operation()
    metrics.dispatched(3.0, None)
    metrics.dispatched(700.0, 600.0)
    metrics.terminal("failed")
    metrics.backpressured("tenant_limit")
    metrics.http_request("GET", "/v1/jobs", 200, 0.01)
    gauges = DatabaseGauges(
        queue_depth=4,
        dlq_depth={"pending": 1},
        attempts_by_status={"queued": 4},
        interrupts_pending=0,
        active_leases_by_worker={'w"1': 1},
        active_leases_by_tenant={},
        stale_leases=0,
    )
    text = metrics.render(gauges)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "oris_runtime_queue_depth",
        "oris_runtime_lease_operations",
        "oris_runtime_lease_conflicts",
        "oris_runtime_lease_conflict_rate",
        "oris_runtime_backpressure",
        "oris_runtime_terminal_acks",
        "oris_runtime_terminal_error_rate",
        "oris_runtime_dispatch_latency_ms",
        "oris_runtime_recovery_latency_ms",
        "oris_runtime_dlq_depth",
    ):
        assert name in families, name
    assert 'oris_runtime_dispatch_latency_ms_bucket{le="1000"} 2' in text
    assert 'oris_runtime_recovery_latency_ms_bucket{le="500"} 0' in text
    assert "oris_runtime_terminal_error_rate 1.000000" in text
    assert "oris_runtime_database_up 0" in metrics.render(None)
