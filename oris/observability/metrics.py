"""Runtime metrics, declared in one place and rendered in Prometheus text format.

Counters and histograms live in the process; gauges that describe the queue's state are read
from the database at scrape time by the caller and passed to ``render``. The exposition keeps
upstream's family names, label sets, bucket bounds and 6-decimal rates.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
# Recovery includes the lease grace and the sweep interval (seconds by design), so it needs
# buckets past upstream's 1000 ms for an alert on its p95 to be able to fire.
RECOVERY_BUCKETS_MS: tuple[float, ...] = (
    *LATENCY_BUCKETS_MS,
    2500,
    5000,
    7500,
    10000,
    30000,
    60000,
)
PURGED_STATUSES: tuple[str, ...] = ("completed", "cancelled", "failed")
SCHEDULE_TICK_OUTCOMES = ("queued", "skipped_overlap", "skipped_paused", "missed")
HTTP_BUCKETS_SECONDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _format_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


@dataclass
class Histogram:
    """A cumulative histogram with fixed bucket bounds."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        """Add one observation."""
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Exposition lines for this histogram."""
        prefix = f"{labels}," if labels else ""
        out = []
        running = 0
        for bound, bucket in zip(self.bounds, self.counts, strict=True):
            running += bucket
            out.append(f'{name}_bucket{{{prefix}le="{_format_bound(bound)}"}} {running}')
        out.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.6f}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


class WindowRatio:
    """Numerator/denominator events over a sliding time window (a rate that forgets)."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._events: deque[tuple[float, int, int]] = deque()

    def add(self, numerator: int, denominator: int, at: float | None = None) -> None:
        """Record events at monotonic time ``at`` (now by default)."""
        self._events.append((time.monotonic() if at is None else at, numerator, denominator))

    def value(self, at: float | None = None) -> float:
        """Ratio over the window; 0 when nothing happened."""
        now = time.monotonic() if at is None else at
        while self._events and self._events[0][0] < now - self.window_seconds:
            self._events.popleft()
        numerator = sum(event[1] for event in self._events)
        denominator = sum(event[2] for event in self._events)
        return numerator / denominator if denominator else 0.0


HISTORY_RESOLUTION_SECONDS = 5.0
# Longer than the longest alert window (10 minutes), so a triage run started well after an
# event still judges the window the alert judged.
HISTORY_HORIZON_SECONDS = 3600.0


class SeriesHistory:
    """When each counter moved and where each tracked gauge stood, in fixed time slots.

    Prometheus judges an alert over the samples it stored for the rule's window. A triage run
    has no such store and cannot wait ten minutes, so the process keeps its own: for every
    slot of ``resolution_seconds`` (wall-clock aligned), how much each counter series grew and
    the lowest and highest value each tracked gauge was seen at, for ``horizon_seconds``.
    An increase over a window is then the sum of the slots the window covers (to within one
    slot), and it is known however long after the event someone asks.
    """

    def __init__(
        self,
        resolution_seconds: float = HISTORY_RESOLUTION_SECONDS,
        horizon_seconds: float = HISTORY_HORIZON_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolution_seconds = resolution_seconds
        self.horizon_seconds = horizon_seconds
        self._clock = clock
        self.started_at = clock()
        self._counters: dict[str, deque[list[float]]] = {}
        self._gauges: dict[str, deque[list[float]]] = {}

    def _slot(self, now: float) -> float:
        return now - now % self.resolution_seconds

    def _prune(self, slots: deque[list[float]], now: float) -> None:
        oldest = self._slot(now - self.horizon_seconds)
        while slots and slots[0][0] < oldest:
            slots.popleft()

    def add(self, series: str, amount: float = 1, now: float | None = None) -> None:
        """Record that the counter ``series`` grew by ``amount``."""
        if amount <= 0:
            return
        moment = self._clock() if now is None else now
        slot = self._slot(moment)
        slots = self._counters.setdefault(series, deque())
        if slots and slots[-1][0] == slot:
            slots[-1][1] += amount
        else:
            slots.append([slot, amount])
            self._prune(slots, moment)

    def observe(self, series: str, value: float, now: float | None = None) -> None:
        """Record that the gauge ``series`` was seen at ``value``."""
        moment = self._clock() if now is None else now
        slot = self._slot(moment)
        slots = self._gauges.setdefault(series, deque())
        if slots and slots[-1][0] == slot:
            slots[-1][1] = min(slots[-1][1], value)
            slots[-1][2] = max(slots[-1][2], value)
        else:
            slots.append([slot, value, value])
            self._prune(slots, moment)

    def export(self, now: float | None = None) -> dict[str, object]:
        """Every slot still held: counters as ``[slot_start_ms, increase]``, gauges as
        ``[slot_start_ms, min, max]``, with the clock they were read against."""
        moment = self._clock() if now is None else now
        for slots in (*self._counters.values(), *self._gauges.values()):
            self._prune(slots, moment)

        def ms(value: float) -> int:
            return int(value * 1000)

        return {
            "now_ms": ms(moment),
            "process_started_at_ms": ms(self.started_at),
            "resolution_seconds": self.resolution_seconds,
            "horizon_seconds": self.horizon_seconds,
            "counters": {
                name: [[ms(slot), _number(amount)] for slot, amount in slots]
                for name, slots in sorted(self._counters.items())
                if slots
            },
            "gauges": {
                name: [[ms(slot), _number(low), _number(high)] for slot, low, high in slots]
                for name, slots in sorted(self._gauges.items())
                if slots
            },
        }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, slots=True)
class DatabaseGauges:
    """Gauges read from the database, so every replica reports the same; the queue depth and
    attempts by status may come from a background count ``counts_age_seconds`` old."""

    queue_depth: int
    dlq_depth: dict[str, int]
    attempts_by_status: dict[str, int]
    interrupts_pending: int
    active_leases_by_worker: dict[str, int]
    active_leases_by_tenant: dict[str, int]
    stale_leases: int
    unacked_finished_attempts: int = 0
    open_incidents: int = 0
    workers_seen: int = 0
    scheduled_jobs: int = 0
    table_dead_tuples: dict[str, int] = field(default_factory=dict)
    oldest_transaction_age_seconds: float | None = None
    counts_age_seconds: float = 0.0
    oldest_finished_job_age_seconds: dict[str, float] = field(default_factory=dict)
    table_size_bytes: dict[str, int] = field(default_factory=dict)
    database_size_bytes: int | None = None


class RuntimeMetrics:
    """Every metric the runtime exports; one instance per API process."""

    def __init__(self, rate_window_seconds: float = 300.0) -> None:
        self._lock = threading.Lock()
        self.lease_operations = 0
        self.lease_conflicts = 0
        self.backpressure = {"worker_limit": 0, "tenant_limit": 0}
        self.terminal_acks = {"completed": 0, "failed": 0, "cancelled": 0}
        self.retries_scheduled = 0
        self.timeouts = {"failed": 0, "cancelled": 0}
        self.leases_expired = 0
        self.dispatches = 0
        self.dispatch_latency = Histogram(LATENCY_BUCKETS_MS)
        self.recovery_latency = Histogram(RECOVERY_BUCKETS_MS)
        self.maintenance_lag = Histogram(LATENCY_BUCKETS_MS)
        self.maintenance_runs = 0
        self.purged_jobs = {status: 0 for status in PURGED_STATUSES}
        self.schedule_tick_counts = dict.fromkeys(SCHEDULE_TICK_OUTCOMES, 0)
        self.schedule_lag_ms = Histogram(RECOVERY_BUCKETS_MS)
        self.http_requests: dict[tuple[str, str, str], int] = {}
        self.http_latency: dict[tuple[str, str], Histogram] = {}
        self.conflict_window = WindowRatio(rate_window_seconds)
        self.error_window = WindowRatio(rate_window_seconds)
        self.history = SeriesHistory()

    def queue_depth_seen(self, depth: int) -> None:
        """Record the queue depth a count read from the database (for windows over it)."""
        with self._lock:
            self.history.observe("oris_runtime_queue_depth", depth)

    def history_snapshot(self) -> dict[str, object]:
        """The recent history of the counters and gauges the alert rules judge over a window."""
        with self._lock:
            return self.history.export()

    def lease_operation(self, conflicts: int = 0, operations: int = 1) -> None:
        """Count lease-sensitive operations and how many of them conflicted."""
        with self._lock:
            self.lease_operations += operations
            self.lease_conflicts += conflicts
            self.conflict_window.add(conflicts, operations)
            self.history.add("oris_runtime_lease_operations_total", operations)
            self.history.add("oris_runtime_lease_conflicts_total", conflicts)

    def lease_conflict(self) -> None:
        """Count a conflict on an operation already counted."""
        with self._lock:
            self.lease_conflicts += 1
            self.conflict_window.add(1, 0)
            self.history.add("oris_runtime_lease_conflicts_total")

    def backpressured(self, reason: str) -> None:
        """Count a poll answered with backpressure."""
        with self._lock:
            self.backpressure[reason] = self.backpressure.get(reason, 0) + 1
            self.history.add(f'oris_runtime_backpressure_total{{reason="{reason}"}}')

    def dispatched(self, latency_ms: float, recovery_ms: float | None) -> None:
        """Count a dispatch; ``recovery_ms`` when it re-dispatched work after a lease expired."""
        with self._lock:
            self.dispatches += 1
            self.dispatch_latency.observe(latency_ms)
            self.history.add("oris_runtime_dispatches_total")
            if recovery_ms is not None:
                self.recovery_latency.observe(recovery_ms)
                name = "oris_runtime_recovery_latency_ms"
                for bound in self.recovery_latency.bounds:
                    if recovery_ms <= bound:
                        self.history.add(f'{name}_bucket{{le="{_format_bound(bound)}"}}')
                self.history.add(f'{name}_bucket{{le="+Inf"}}')
                self.history.add(f"{name}_count")

    def terminal(self, status: str) -> None:
        """Count an attempt that reached a terminal status."""
        with self._lock:
            self.terminal_acks[status] = self.terminal_acks.get(status, 0) + 1
            self.error_window.add(0 if status == "completed" else 1, 1)
            self.history.add(f'oris_runtime_terminal_acks_total{{status="{status}"}}')

    def retry_scheduled(self) -> None:
        """Count a retry booked by an ack or a timeout."""
        with self._lock:
            self.retries_scheduled += 1

    def timed_out(self, status: str) -> None:
        """Count an execution timeout."""
        with self._lock:
            self.timeouts[status] = self.timeouts.get(status, 0) + 1

    def lease_expired(self, count: int) -> None:
        """Count leases expired by maintenance."""
        with self._lock:
            self.leases_expired += count
            self.history.add("oris_runtime_leases_expired_total", count)

    def purged(self, status: str, count: int) -> None:
        """Count finished jobs deleted by retention or a manual purge."""
        with self._lock:
            self.purged_jobs[status] = self.purged_jobs.get(status, 0) + count

    def maintenance_ran(self, lag_ms: float) -> None:
        """Record how late a maintenance pass started relative to its schedule."""
        with self._lock:
            self.maintenance_runs += 1
            self.maintenance_lag.observe(lag_ms)

    def schedule_ticks(self, outcome: str, count: int = 1) -> None:
        """Count schedule ticks handled by this process, by what became of them."""
        with self._lock:
            self.schedule_tick_counts[outcome] = self.schedule_tick_counts.get(outcome, 0) + count

    def schedule_lag(self, lag_ms: float) -> None:
        """Record how long after its tick time a schedule's job was queued."""
        with self._lock:
            self.schedule_lag_ms.observe(lag_ms)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a served request by route template and status class."""
        status_class = f"{status // 100}xx"
        with self._lock:
            key = (method, route, status_class)
            self.http_requests[key] = self.http_requests.get(key, 0) + 1
            histogram = self.http_latency.get((method, route))
            if histogram is None:
                histogram = self.http_latency[(method, route)] = Histogram(HTTP_BUCKETS_SECONDS)
            histogram.observe(seconds)
            if status_class == "5xx":
                # Summed over routes: the API-errors alert judges the total.
                self.history.add('oris_runtime_http_requests_total{status_class="5xx"}')

    def render(self, gauges: DatabaseGauges | None) -> str:
        """The full exposition; ``gauges`` None means the database could not be read."""
        with self._lock:
            return "\n".join(self._lines(gauges)) + "\n"

    def _lines(self, gauges: DatabaseGauges | None) -> Iterable[str]:
        def family(name: str, kind: str, help_text: str) -> list[str]:
            return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

        out: list[str] = []
        out += family(
            "oris_runtime_queue_depth",
            "gauge",
            "Dispatchable attempts, counted in the database (see oris_runtime_counts_age_seconds).",
        )
        out.append(f"oris_runtime_queue_depth {gauges.queue_depth if gauges else 0}")
        out += family(
            "oris_runtime_lease_operations_total",
            "counter",
            "Lease-sensitive operations (dispatch lease creation, heartbeats, extensions).",
        )
        out.append(f"oris_runtime_lease_operations_total {self.lease_operations}")
        out += family(
            "oris_runtime_lease_conflicts_total",
            "counter",
            "Lease operations refused because another owner or version won.",
        )
        out.append(f"oris_runtime_lease_conflicts_total {self.lease_conflicts}")
        out += family(
            "oris_runtime_lease_conflict_rate",
            "gauge",
            "Lease conflicts divided by lease operations over the recent window.",
        )
        out.append(f"oris_runtime_lease_conflict_rate {self.conflict_window.value():.6f}")
        out += family(
            "oris_runtime_backpressure_total",
            "counter",
            "Polls answered with backpressure, by reason.",
        )
        for reason in ("worker_limit", "tenant_limit"):
            out.append(
                f'oris_runtime_backpressure_total{{reason="{reason}"}} {self.backpressure.get(reason, 0)}'
            )
        out += family(
            "oris_runtime_terminal_acks_total",
            "counter",
            "Attempts that reached a terminal status, by status.",
        )
        for status in ("completed", "failed", "cancelled"):
            out.append(
                f'oris_runtime_terminal_acks_total{{status="{status}"}} {self.terminal_acks.get(status, 0)}'
            )
        out += family(
            "oris_runtime_terminal_error_rate",
            "gauge",
            "Failed or cancelled terminal outcomes divided by all terminal outcomes over the recent window.",
        )
        out.append(f"oris_runtime_terminal_error_rate {self.error_window.value():.6f}")
        out += family(
            "oris_runtime_dispatch_latency_ms",
            "histogram",
            "Time from poll start to lease creation, in milliseconds.",
        )
        out += self.dispatch_latency.lines("oris_runtime_dispatch_latency_ms")
        out += family(
            "oris_runtime_recovery_latency_ms",
            "histogram",
            "Time from a lease expiring to its attempt being dispatched again, in milliseconds.",
        )
        out += self.recovery_latency.lines("oris_runtime_recovery_latency_ms")

        out += family(
            "oris_runtime_retries_scheduled_total",
            "counter",
            "Retries booked after a failure or timeout.",
        )
        out.append(f"oris_runtime_retries_scheduled_total {self.retries_scheduled}")
        out += family(
            "oris_runtime_timeouts_total",
            "counter",
            "Attempts stopped by their execution timeout, by resulting status.",
        )
        for status in ("failed", "cancelled"):
            out.append(
                f'oris_runtime_timeouts_total{{status="{status}"}} {self.timeouts.get(status, 0)}'
            )
        out += family(
            "oris_runtime_leases_expired_total",
            "counter",
            "Leases expired by maintenance and requeued.",
        )
        out.append(f"oris_runtime_leases_expired_total {self.leases_expired}")
        out += family(
            "oris_runtime_purged_jobs_total",
            "counter",
            "Finished jobs deleted with all their rows (retention or manual purge), by status.",
        )
        for status, count in sorted(self.purged_jobs.items()):
            out.append(f'oris_runtime_purged_jobs_total{{status="{status}"}} {count}')
        out += family("oris_runtime_dispatches_total", "counter", "Attempts dispatched to workers.")
        out.append(f"oris_runtime_dispatches_total {self.dispatches}")
        out += family(
            "oris_runtime_maintenance_lag_ms",
            "histogram",
            "How late each maintenance pass started, in milliseconds.",
        )
        out += self.maintenance_lag.lines("oris_runtime_maintenance_lag_ms")
        out += family(
            "oris_runtime_schedule_ticks_total",
            "counter",
            "Schedule ticks handled by this process, by outcome.",
        )
        for outcome, count in self.schedule_tick_counts.items():
            out.append(f'oris_runtime_schedule_ticks_total{{outcome="{outcome}"}} {count}')
        out += family(
            "oris_runtime_schedule_lag_ms",
            "histogram",
            "Time from a schedule's tick to its job being queued, in milliseconds.",
        )
        out += self.schedule_lag_ms.lines("oris_runtime_schedule_lag_ms")
        out += family(
            "oris_runtime_http_requests_total",
            "counter",
            "HTTP requests by method, route template and status class.",
        )
        for (method, route, status_class), count in sorted(self.http_requests.items()):
            out.append(
                f'oris_runtime_http_requests_total{{method="{method}",route="{route}",status_class="{status_class}"}} {count}'
            )
        out += family(
            "oris_runtime_http_request_duration_seconds",
            "histogram",
            "HTTP request duration by method and route template.",
        )
        for (method, route), histogram in sorted(self.http_latency.items()):
            out += histogram.lines(
                "oris_runtime_http_request_duration_seconds", f'method="{method}",route="{route}"'
            )

        out += family(
            "oris_runtime_database_up",
            "gauge",
            "1 when the database answered the scrape's queries.",
        )
        out.append(f"oris_runtime_database_up {1 if gauges else 0}")
        if gauges is None:
            return out
        out += family(
            "oris_runtime_dlq_depth", "gauge", "Dead letters by replay status, from the database."
        )
        for status in sorted({"pending", "replayed", *gauges.dlq_depth}):
            out.append(
                f'oris_runtime_dlq_depth{{replay_status="{status}"}} {gauges.dlq_depth.get(status, 0)}'
            )
        out += family("oris_runtime_attempts", "gauge", "Attempts by status, from the database.")
        for status, count in sorted(gauges.attempts_by_status.items()):
            out.append(f'oris_runtime_attempts{{status="{status}"}} {count}')
        out += family(
            "oris_runtime_counts_age_seconds",
            "gauge",
            "Age of the queue depth and attempts-by-status counts; 0 when this scrape counted.",
        )
        out.append(f"oris_runtime_counts_age_seconds {gauges.counts_age_seconds:.6f}")
        out += family(
            "oris_runtime_scheduled_jobs",
            "gauge",
            "Jobs waiting for their start or wake-up time (not counted in the queue depth).",
        )
        out.append(f"oris_runtime_scheduled_jobs {gauges.scheduled_jobs}")
        out += family(
            "oris_runtime_interrupts_pending", "gauge", "Interrupts waiting for a human decision."
        )
        out.append(f"oris_runtime_interrupts_pending {gauges.interrupts_pending}")
        out += family("oris_runtime_active_leases", "gauge", "Unexpired active leases per worker.")
        for worker, count in sorted(gauges.active_leases_by_worker.items()):
            out.append(f'oris_runtime_active_leases{{worker_id="{_escape(worker)}"}} {count}')
        out += family(
            "oris_runtime_tenant_active_leases", "gauge", "Unexpired active leases per tenant."
        )
        for tenant, count in sorted(gauges.active_leases_by_tenant.items()):
            out.append(
                f'oris_runtime_tenant_active_leases{{tenant_id="{_escape(tenant)}"}} {count}'
            )
        out += family(
            "oris_runtime_stale_leases",
            "gauge",
            "Active leases past their expiry that maintenance has not requeued yet.",
        )
        out.append(f"oris_runtime_stale_leases {gauges.stale_leases}")
        out += family(
            "oris_runtime_unacked_finished_attempts",
            "gauge",
            "Live leases whose holder declared the outcome decided (a heartbeat with settling) "
            "longer ago than ORIS_UNACKED_FINISHED_BOUND_SECONDS, still not acked.",
        )
        out.append(f"oris_runtime_unacked_finished_attempts {gauges.unacked_finished_attempts}")
        out += family(
            "oris_runtime_workers_seen",
            "gauge",
            "Workers that polled in the last 60 seconds, from the database.",
        )
        out.append(f"oris_runtime_workers_seen {gauges.workers_seen}")
        out += family(
            "oris_runtime_open_incidents", "gauge", "Open operator incidents (freeze in force)."
        )
        out.append(f"oris_runtime_open_incidents {gauges.open_incidents}")
        if gauges.table_dead_tuples:
            out += family(
                "oris_runtime_table_dead_tuples",
                "gauge",
                "PostgreSQL dead tuples per runtime table (queue bloat).",
            )
            for table, count in sorted(gauges.table_dead_tuples.items()):
                out.append(f'oris_runtime_table_dead_tuples{{table="{table}"}} {count}')
        out += family(
            "oris_runtime_oldest_finished_job_age_seconds",
            "gauge",
            "Age of the oldest finished job retention could purge, by status (0: none).",
        )
        for status in PURGED_STATUSES:
            age = gauges.oldest_finished_job_age_seconds.get(status, 0.0)
            out.append(
                f'oris_runtime_oldest_finished_job_age_seconds{{status="{status}"}} {age:.3f}'
            )
        if gauges.table_size_bytes:
            out += family(
                "oris_runtime_table_size_bytes",
                "gauge",
                "PostgreSQL size of each runtime table with its indexes and TOAST.",
            )
            for table, size in sorted(gauges.table_size_bytes.items()):
                out.append(f'oris_runtime_table_size_bytes{{table="{table}"}} {size}')
        if gauges.database_size_bytes is not None:
            out += family(
                "oris_runtime_database_size_bytes",
                "gauge",
                "Bytes the runtime's tables take: their sum (PostgreSQL) or the file (SQLite).",
            )
            out.append(f"oris_runtime_database_size_bytes {gauges.database_size_bytes}")
        if gauges.oldest_transaction_age_seconds is not None:
            out += family(
                "oris_runtime_oldest_transaction_age_seconds",
                "gauge",
                "Age of the oldest open transaction in the database; long ones stop vacuum.",
            )
            out.append(
                f"oris_runtime_oldest_transaction_age_seconds {gauges.oldest_transaction_age_seconds:.3f}"
            )
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
