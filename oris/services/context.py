"""Who is calling and on behalf of which request; passed into every use case."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Roles a credential can carry."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller (or the anonymous one when auth is off)."""

    actor_type: str = "anonymous"
    actor_id: str | None = None
    role: Role | None = None
    worker_id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per-request facts the services record in the audit log and timeline."""

    request_id: str
    actor: Actor = field(default_factory=Actor)
    source_addr: str | None = None
    traceparent: str | None = None
    freeze_override_reason: str | None = None

    @classmethod
    def internal(cls, request_id: str = "internal") -> RequestContext:
        """A context for work the runtime does on its own (maintenance, CLI)."""
        return cls(request_id=request_id, actor=Actor(actor_type="system", role=Role.ADMIN))
