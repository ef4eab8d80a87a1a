"""The handles every use case needs: database, settings and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from oris.config import ServerSettings
from oris.observability.metrics import RuntimeMetrics
from oris.store.database import Database


@dataclass(frozen=True, slots=True)
class Runtime:
    """Owned by the API process; built in its lifespan, never at import."""

    db: Database
    settings: ServerSettings
    metrics: RuntimeMetrics
    # When this process last recorded each worker's poll (monotonic seconds); the registry
    # is written at most once per WORKER_SEEN_INTERVAL_SECONDS per worker and process.
    worker_seen: dict[str, float] = field(default_factory=dict)
