"""The fixture itself: a database per test on each backend, migrated to head."""

from __future__ import annotations

import httpx

from oris.store.schema import code_version


async def test_healthz_reports_backend_and_schema(api: httpx.AsyncClient, backend: str) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["backend"] == backend
    assert body["schema_version"] == body["code_schema_version"] == code_version()
    assert body["incident"] is None
