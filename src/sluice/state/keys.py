"""Client API keys: created by the CLI, stored as SHA-256 hashes, looked up by hash.

Keys are 256-bit random tokens, so a fast hash is as safe as a slow one and keeps the check cheap;
the plaintext exists only in the output of `sluice keys create`.

Format: `sk-sluice-` + 43 base62 characters (the 256-bit token) + 6 base62 characters (the
token's CRC-32). The checksum lets the gateway refuse a mistyped, truncated or made-up key
without asking the database. It is not a secret and proves nothing about a key's validity: a
well-formed key still has to be found in the database. Keys from before the checksum
(`sk-sluice-` + 43 characters of `secrets.token_urlsafe(32)`) keep working; they differ in length.
Caching and outage handling live in `sluice.http.auth`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
import zlib
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.state.db import api_keys

KEY_PREFIX = "sk-sluice-"
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_TOKEN_CHARS = 43  # 62**43 > 2**256
_CHECK_CHARS = 6  # 62**6 > 2**32: a CRC-32 always fits
_CURRENT = re.compile(re.escape(KEY_PREFIX) + f"[0-9A-Za-z]{{{_TOKEN_CHARS + _CHECK_CHARS}}}")
_LEGACY = re.compile(re.escape(KEY_PREFIX) + "[A-Za-z0-9_-]{43}")

KeyFormat = Literal["current", "legacy"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a named key, or the master key."""

    name: str
    key_id: int | None  # None for the master key and for an open (keyless) gateway


MASTER = Principal("master", None)
ANONYMOUS = Principal("anonymous", None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _checksum(token: str) -> str:
    value = zlib.crc32(token.encode("ascii"))
    digits = []
    for _ in range(_CHECK_CHARS):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def new_key() -> str:
    """A fresh key in the current format."""
    token = "".join(secrets.choice(_BASE62) for _ in range(_TOKEN_CHARS))
    return KEY_PREFIX + token + _checksum(token)


def key_format(key: str) -> KeyFormat | None:
    """The format of a presented key, or None if it cannot be a Sluice key. No database involved."""
    if _CURRENT.fullmatch(key):
        body = key[len(KEY_PREFIX) :]
        return "current" if _checksum(body[:_TOKEN_CHARS]) == body[_TOKEN_CHARS:] else None
    if _LEGACY.fullmatch(key):
        return "legacy"
    return None


class KeyStore:
    """The `api_keys` table. Every method is one database round trip; callers handle failures."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, name: str) -> str:
        """Store a new key and return its plaintext (the only time it exists)."""
        key = new_key()
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

    async def find(self, key_hash: str) -> Principal | None:
        """The active key with this SHA-256 hash, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.name).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)))).first()
        return Principal(row.name, row.id) if row is not None else None


def is_master(key: str, master_key: str | None) -> bool:
    return bool(master_key) and hmac.compare_digest(key.encode(), master_key.encode())  # type: ignore[union-attr]
