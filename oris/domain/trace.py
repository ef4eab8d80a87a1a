"""W3C trace context: parsing ``traceparent`` and advancing spans as work moves on."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from oris.domain.errors import InvalidArgument

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_FORMAT_MESSAGE = "traceparent must use format 00-<32 hex trace_id>-<16 hex span_id>-<2 hex flags>"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span of a trace: the trace id follows a job across processes."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value for this span."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span whose parent is this one, in the same trace."""
        return TraceContext(self.trace_id, new_span_id(), self.span_id, self.flags)

    @classmethod
    def start(cls, traceparent: str | None) -> TraceContext:
        """Continue an incoming ``traceparent`` or start a new trace (400 when malformed)."""
        if traceparent is None:
            return cls(secrets.token_hex(16), new_span_id(), None, "01")
        if not traceparent.isascii():
            raise InvalidArgument("traceparent header must be valid ASCII")
        match = _TRACEPARENT.match(traceparent.strip().lower())
        if match is None:
            raise InvalidArgument(_FORMAT_MESSAGE)
        trace_id, parent_span, flags = match.groups()
        if set(trace_id) == {"0"} or set(parent_span) == {"0"}:
            raise InvalidArgument(_FORMAT_MESSAGE)
        return cls(trace_id, new_span_id(), parent_span, flags)


def new_span_id() -> str:
    """A random, non-zero 16-hex span id."""
    while True:
        span = secrets.token_hex(8)
        if span != "0" * 16:
            return span
