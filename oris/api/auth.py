"""Authentication (bootstrap credentials and managed keys) and the role matrix."""

from __future__ import annotations

import hmac
import logging

from starlette.requests import Request

from oris.api.ratelimit import FailureLimiter
from oris.config import ServerSettings
from oris.domain.errors import Forbidden, Unauthorized
from oris.services.context import Actor, Role
from oris.services.keys import KeyVerifier, VerifiedKey

log = logging.getLogger("oris.auth")
UNAUTHORIZED_MESSAGE = "missing or invalid credentials"
FORBIDDEN_MESSAGE = "role is not allowed to access this endpoint"

_READ_PREFIXES = (
    "/v1/jobs",
    "/v1/interrupts",
    "/v1/dlq",
    "/v1/audit",
    "/v1/attempts",
    "/v1/incidents",
    "/v1/workers",
    "/v1/metrics",
    "/v1/schedules",
)
_OPERATOR_WRITE_PREFIXES = (
    "/v1/jobs",
    "/v1/interrupts",
    "/v1/dlq",
    "/v1/incidents",
    "/v1/schedules",
)
# Deleting history is for admins only, although it sits under an operator prefix.
_ADMIN_ONLY_WRITES = frozenset({"/v1/jobs/purge", "/v1/audit/archive"})


def secrets_match(presented: str, expected: str) -> bool:
    """Constant-time comparison used for every secret."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def role_allows(role: Role, method: str, path: str) -> bool:
    """The role matrix: admin everything; operator jobs/interrupts/DLQ (+ reads) except the
    purge; viewer reads; worker only the worker endpoints."""
    if role is Role.ADMIN:
        return True
    is_read = method in {"GET", "HEAD"}
    if not is_read and path.rstrip("/") in _ADMIN_ONLY_WRITES:
        return False
    if role is Role.WORKER:
        return path.startswith("/v1/workers") and not is_read
    if role is Role.VIEWER:
        return is_read and path.startswith(_READ_PREFIXES)
    if role is Role.OPERATOR:
        if is_read:
            return path.startswith(_READ_PREFIXES)
        return path.startswith(_OPERATOR_WRITE_PREFIXES)
    return False


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; the scheme name is
    case-insensitive (RFC 7235), so ``bearer`` and ``BEARER`` work too."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Throttled(Exception):
    """Too many failed credential checks from this address or for this key id."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__("too many failed credential checks")
        self.retry_after_seconds = retry_after_seconds


class Authenticator:
    """Resolves a request's credential to an actor, failing closed.

    Whether credentials are required is decided once and only ever tightened: it is on when
    the server listens beyond loopback or a bootstrap credential is configured, and it turns
    on for good the moment any managed key exists (disabling every key does not open the
    server again). Only ``ORIS_AUTH_DISABLED=true`` switches it off."""

    def __init__(
        self, settings: ServerSettings, verifier: KeyVerifier, failures: FailureLimiter
    ) -> None:
        self._bearer = _secret(settings.api_auth_bearer_token)
        key = _secret(settings.api_auth_api_key)
        key_id = (settings.api_auth_api_key_id or "").strip() or None
        self._unkeyed = key if key_id is None else None
        self._keyed = (key_id, key) if key_id is not None and key is not None else None
        self._keyed_role = Role(settings.api_auth_api_key_role)
        self._verifier = verifier
        self._failures = failures
        self._open = settings.auth_disabled
        self._required = not self._open and (not settings.binds_loopback or self.static_credentials)

    def keys_changed(self) -> None:
        """A key was disabled or rotated by this process: re-read at once."""
        self._verifier.invalidate()

    def key_created(self) -> None:
        """A key was created by this process: credentials are required from now on."""
        self._verifier.key_created()
        if not self._open:
            self._required = True

    @property
    def static_credentials(self) -> bool:
        """Whether any bootstrap credential is configured."""
        return any((self._bearer, self._unkeyed, self._keyed))

    async def enforced(self) -> bool:
        """Whether ``/v1/*`` requires a credential (see the class docstring)."""
        if self._open:
            return False
        if not self._required and await self._verifier.any_key_exists():
            self._required = True
        return self._required

    async def authenticate(self, request: Request) -> Actor:
        """The caller's actor; anonymous admin when auth is off; 401 otherwise; ``Throttled``
        when this address or key id has used up its failed checks."""
        if not await self.enforced():
            return Actor(actor_type="anonymous", role=Role.ADMIN)
        actor = await self._resolve(request)
        if actor is None:
            raise Unauthorized(UNAUTHORIZED_MESSAGE)
        return actor

    async def _resolve(self, request: Request) -> Actor | None:
        token = bearer_token(_header(request, "authorization"))
        api_key = _header(request, "x-api-key")
        key_id = _header(request, "x-api-key-id")
        if token is None and api_key is None:
            return None
        if api_key is not None and key_id is not None:
            # A key this process verified moments ago costs no hash and is never throttled,
            # so a guesser hammering a known key id cannot lock its real owner out.
            recent = self._verifier.cached(key_id, api_key)
            if recent is not None:
                return _managed_actor(recent)
        client = request.client
        budget = [f"addr:{client.host if client else '-'}"]
        if key_id is not None and api_key is not None:
            budget.append(f"key:{key_id}")
        wait = self._failures.retry_after(budget)
        if wait > 0:
            raise Throttled(wait)
        actor = await self._check(token, key_id, api_key)
        if actor is None:
            self._failures.failed(budget)
        return actor

    async def _check(
        self, token: str | None, key_id: str | None, api_key: str | None
    ) -> Actor | None:
        if token is not None and self._bearer and secrets_match(token, self._bearer):
            return Actor(actor_type="bearer", role=Role.ADMIN)
        if api_key is None:
            return None
        if key_id is None:
            if self._unkeyed and secrets_match(api_key, self._unkeyed):
                return Actor(actor_type="api_key", role=Role.ADMIN)
            return None
        if self._keyed is not None:
            static_id, static_secret = self._keyed
            if (
                secrets_match(key_id, static_id)
                and static_secret
                and secrets_match(api_key, static_secret)
            ):
                return Actor(actor_type="api_key", actor_id=key_id, role=self._keyed_role)
        verified = await self._verifier.verify(key_id, api_key)
        return None if verified is None else _managed_actor(verified)


def _managed_actor(verified: VerifiedKey) -> Actor:
    return Actor(
        actor_type="api_key",
        actor_id=verified.key_id,
        role=verified.role,
        worker_id_prefix=verified.worker_id_prefix,
    )


def authorize(actor: Actor, method: str, path: str) -> None:
    """403 unless the actor's role may call this route."""
    if actor.role is None or not role_allows(actor.role, method, path):
        raise Forbidden(
            FORBIDDEN_MESSAGE,
            {
                "role": None if actor.role is None else actor.role.value,
                "method": method,
                "path": path,
            },
        )


def authorize_worker_id(actor: Actor, worker_id: str | None) -> None:
    """A worker key bound to a prefix may only act as workers whose id starts with it."""
    if actor.worker_id_prefix is None or worker_id is None:
        return
    if not worker_id.startswith(actor.worker_id_prefix):
        raise Forbidden(
            "credential may not act as this worker",
            {"role": actor.role.value if actor.role else None, "worker_id": worker_id},
        )


def _secret(value: object) -> str | None:
    if value is None:
        return None
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    raw = raw.strip()
    return raw or None
