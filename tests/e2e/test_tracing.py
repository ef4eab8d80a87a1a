"""One trace id follows a job from submission through every worker call, exported over OTLP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from oris.config import ServerSettings
from tests.support import Process, free_port, oris_command, running_server, server_env, wait_until

pytestmark = pytest.mark.e2e
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        type(self).received.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def _spans(received: list[bytes]) -> list[tuple[str, str]]:
    spans: list[tuple[str, str]] = []
    for body in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend((span.trace_id.hex(), span.name) for span in scope.spans)
    return spans


def test_a_jobs_trace_spans_submission_and_every_worker_call(
    settings: ServerSettings, tmp_path: Path, collector: tuple[str, list[bytes]]
) -> None:
    endpoint, received = collector
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running_server(settings, tmp_path, **otel) as url:
        worker = Process(
            [*oris_command(), "worker", "--worker-id", "traced-worker"],
            server_env(settings, ORIS_SERVER_URL=url),
            tmp_path / "worker.log",
        )
        try:
            traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
            response = httpx.post(
                f"{url}/v1/jobs/run",
                json={"thread_id": "traced", "workflow": "steps", "input": {"steps": 1}},
                headers={"traceparent": traceparent},
            )
            assert response.json()["data"]["trace"]["trace_id"] == TRACE_ID

            def completed() -> bool:
                return bool(
                    httpx.get(f"{url}/v1/jobs/traced").json()["data"]["status"] == "completed"
                )

            wait_until(completed, timeout=30, message="the traced job to complete")
        finally:
            worker.stop()
    names = {name for trace_id, name in _spans(received) if trace_id == TRACE_ID}
    assert "POST /v1/jobs/run" in names
    assert "POST /v1/workers/{worker_id}/report-step" in names
    assert "POST /v1/workers/{worker_id}/ack" in names
    assert '"thread_id": "traced"' in worker.output()
