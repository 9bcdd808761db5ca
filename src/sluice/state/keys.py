"""Client API keys: created by the CLI, stored as SHA-256 hashes, checked on every request.

Keys are 256-bit random tokens, so a fast hash is as safe as a slow one and keeps the check cheap;
the plaintext exists only in the output of `sluice keys create`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.state.db import api_keys

KEY_PREFIX = "sk-sluice-"
_POSITIVE_TTL = 30.0  # a revoked key stops working within this many seconds on every replica
_NEGATIVE_TTL = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a named key, or the master key."""

    name: str
    key_id: int | None  # None for the master key and for an open (keyless) gateway


MASTER = Principal("master", None)
ANONYMOUS = Principal("anonymous", None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(self, name: str) -> str:
        """Store a new key and return its plaintext (the only time it exists)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            exists = await conn.scalar(sa.select(api_keys.c.id).where(api_keys.c.name == name))
            if exists is not None:
                raise ValueError(f"a key named {name!r} already exists")
            await conn.execute(api_keys.insert().values(
                name=name, key_hash=hash_key(key), prefix=key[: len(KEY_PREFIX) + 4], created_at=int(time.time())))
        return key

    async def list(self) -> list[dict[str, object]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at,
                                                api_keys.c.revoked_at).order_by(api_keys.c.id))
            return [dict(row._mapping) for row in rows]

    async def revoke(self, name: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(api_keys.update().where(
                api_keys.c.name == name, api_keys.c.revoked_at.is_(None)).values(revoked_at=int(time.time())))
            return result.rowcount > 0

    async def count_active(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(
                sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))) or 0)

    async def authenticate(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 128:
            return None  # not a Sluice key: no database round trip for garbage
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.name).where(
                api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)))).first()
        principal = Principal(row.name, row.id) if row is not None else None
        if len(self._cache) > 100_000:
            # Forget the oldest half (dicts keep insertion order), not the keys in use right now.
            for stale in list(self._cache)[:50_000]:
                del self._cache[stale]
        self._cache[digest] = (now + (_POSITIVE_TTL if principal else _NEGATIVE_TTL), principal)
        return principal


def is_master(key: str, master_key: str | None) -> bool:
    return bool(master_key) and hmac.compare_digest(key.encode(), master_key.encode())  # type: ignore[union-attr]
