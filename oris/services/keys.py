"""Managed API keys: salted scrypt hashes, shown once, audited management."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from oris.domain.clock import now_ms, optional_rfc3339, to_rfc3339
from oris.domain.errors import Conflict, InvalidArgument, NotFound
from oris.domain.validation import optional_id, require_id
from oris.services import audit
from oris.services.context import RequestContext, Role
from oris.store import api_keys as key_store
from oris.store.api_keys import ApiKeyRecord
from oris.store.database import Database

# scrypt cost: about 30 ms per check here, so guessing a 32-byte secret stays hopeless even
# if the table leaks; verified keys are cached briefly so requests do not pay it each time.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
VERIFY_CACHE_SECONDS = 5.0


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for a secret."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encode = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of a secret against its stored hash."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    salt = base64.b64decode(salt_b64)
    expected = base64.b64decode(digest_b64)
    actual = hashlib.scrypt(
        secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
    )
    return hmac.compare_digest(actual, expected)


def _view(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "role": record.role,
        "status": record.status,
        "worker_id_prefix": record.worker_id_prefix,
        "description": record.description,
        "created_at": to_rfc3339(record.created_at_ms),
        "updated_at": to_rfc3339(record.updated_at_ms),
        "last_used_at": optional_rfc3339(record.last_used_at_ms),
    }


def _parse_role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        raise InvalidArgument("role must be one of: admin|operator|viewer|worker") from None


async def create_key(
    db: Database,
    ctx: RequestContext,
    *,
    role: str,
    key_id: str | None = None,
    worker_id_prefix: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Create a key; the response is the only place the secret ever appears."""
    resolved_role = _parse_role(role)
    resolved_id = require_id("key_id", key_id) if key_id else f"key-{secrets.token_hex(6)}"
    prefix = optional_id("worker_id_prefix", worker_id_prefix)
    if prefix is not None and resolved_role is not Role.WORKER:
        raise InvalidArgument("worker_id_prefix only applies to worker keys")
    secret = secrets.token_urlsafe(32)
    now = now_ms()
    async with db.write() as conn:
        if await key_store.get(conn, resolved_id) is not None:
            raise Conflict(f"api key {resolved_id} already exists")
        await key_store.insert(
            conn,
            {
                "key_id": resolved_id,
                "secret_hash": hash_secret(secret),
                "status": "active",
                "role": resolved_role.value,
                "worker_id_prefix": prefix,
                "description": description,
                "created_at_ms": now,
                "updated_at_ms": now,
            },
        )
        await audit.write(
            conn,
            ctx,
            action="key.create",
            resource_type="api_key",
            resource_id=resolved_id,
            details={"role": resolved_role.value, "worker_id_prefix": prefix},
        )
        record = await key_store.get(conn, resolved_id)
    assert record is not None
    return {**_view(record), "secret": secret}


async def list_keys(db: Database) -> dict[str, Any]:
    """Every key without secrets."""
    async with db.read() as conn:
        return {"keys": [_view(record) for record in await key_store.list_keys(conn)]}


async def disable_key(db: Database, ctx: RequestContext, key_id: str) -> dict[str, Any]:
    """Disable a key at once (cached verifications lapse within a few seconds)."""
    async with db.write() as conn:
        if not await key_store.update_key(
            conn, key_id, {"status": "disabled", "updated_at_ms": now_ms()}
        ):
            raise NotFound(f"api key {key_id} not found")
        await audit.write(
            conn, ctx, action="key.disable", resource_type="api_key", resource_id=key_id
        )
        record = await key_store.get(conn, key_id)
    assert record is not None
    return _view(record)


async def rotate_key(
    db: Database, ctx: RequestContext, key_id: str, *, reactivate: bool = False
) -> dict[str, Any]:
    """Replace a key's secret; the old one stops working. A disabled key is refused (409)
    unless ``reactivate`` says to bring it back, so a rotation never re-enables a key that
    somebody disabled on purpose."""
    secret = secrets.token_urlsafe(32)
    async with db.write() as conn:
        record = await key_store.get(conn, key_id, lock=True)
        if record is None:
            raise NotFound(f"api key {key_id} not found")
        reactivated = record.status != "active"
        if reactivated and not reactivate:
            raise Conflict(
                f"api key {key_id} is disabled; rotating it would re-enable it: pass "
                "reactivate (oris keys rotate --reactivate) to do that on purpose",
                {"key_id": key_id, "status": record.status},
            )
        await key_store.update_key(
            conn,
            key_id,
            {"secret_hash": hash_secret(secret), "status": "active", "updated_at_ms": now_ms()},
        )
        await audit.write(
            conn,
            ctx,
            action="key.rotate",
            resource_type="api_key",
            resource_id=key_id,
            details={"reactivated": True} if reactivated else None,
        )
        record = await key_store.get(conn, key_id)
    assert record is not None
    return {**_view(record), "secret": secret}


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A managed key that authenticated."""

    key_id: str
    role: Role
    worker_id_prefix: str | None


class KeyVerifier:
    """Checks managed keys, caching successful checks briefly (scrypt is deliberately slow).

    Every check that reaches the hash costs exactly one scrypt: an unknown or disabled key id
    is checked against a dummy hash of the same parameters, so the answer time does not tell
    which key ids exist."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[str, str], tuple[float, VerifiedKey]] = {}
        self._any_key: tuple[float, bool] | None = None
        self._dummy_hash: str | None = None

    def invalidate(self) -> None:
        """Forget cached answers (after this process changed a key)."""
        if self._any_key is not None and not self._any_key[1]:
            self._any_key = None
        self._cache.clear()

    def key_created(self) -> None:
        """This process created a key: keys exist from now on."""
        self._any_key = (time.monotonic(), True)
        self._cache.clear()

    async def any_key_exists(self) -> bool:
        """Whether a managed key was ever created (active or not), re-read at most once a
        second until the answer is yes; keys are never deleted, so yes stays yes."""
        now = time.monotonic()
        if self._any_key is not None and (self._any_key[1] or now - self._any_key[0] <= 1.0):
            return self._any_key[1]
        async with self._db.read() as conn:
            self._any_key = (now, await key_store.any_exists(conn))
        return self._any_key[1]

    def cached(self, key_id: str, secret: str) -> VerifiedKey | None:
        """A recent successful verification of exactly this key id and secret (no hash)."""
        cached = self._cache.get((key_id, _fingerprint(secret)))
        if cached is not None and time.monotonic() - cached[0] < VERIFY_CACHE_SECONDS:
            return cached[1]
        return None

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(hash_secret, secrets.token_urlsafe(32))
        return self._dummy_hash

    async def verify(self, key_id: str, secret: str) -> VerifiedKey | None:
        """The key's role when the secret matches an active key."""
        verified = self.cached(key_id, secret)
        if verified is not None:
            return verified
        async with self._db.read() as conn:
            record = await key_store.get(conn, key_id)
        fingerprint = _fingerprint(secret)
        if record is None or record.status != "active":
            # Pay the same hash as a wrong secret would, and refuse whatever it says.
            await asyncio.to_thread(verify_secret, secret, await self._dummy())
            return None
        if not await asyncio.to_thread(verify_secret, secret, record.secret_hash):
            self._cache.pop((key_id, fingerprint), None)
            return None
        verified = VerifiedKey(record.key_id, _parse_role(record.role), record.worker_id_prefix)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(key_id, fingerprint)] = (time.monotonic(), verified)
        return verified


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
