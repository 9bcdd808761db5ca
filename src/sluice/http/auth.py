"""Authentication, and readiness: who is calling, without letting the database decide availability.

- A key that cannot be a Sluice key (wrong shape or checksum) is refused without the database.
- Answers are cached per process: a valid key for 30 s (a revocation reaches every worker within
  that), an unknown key for 5 s. Each cache is a bounded LRU, and they are separate, so a flood
  of wrong keys can neither grow memory nor evict the keys in use.
- When the database cannot answer (down, frozen, timing out), a request that needs it gets a 503
  with `Retry-After`, fast: after a failure the database is left alone for `_RETRY_AFTER`
  seconds and then probed by one request at a time. Keys seen before the outage keep working
  from the cache, past their TTL if need be (up to `_STALE_GRACE`).
- Without a master key, a gateway whose database has no key is open. While open it asks the
  database at most every `_OPEN_RECHECK` seconds whether a key exists now; once one does, every
  worker requires keys within seconds, and keeps requiring them until restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.config import Config
from sluice.errors import ServiceUnavailable, Unauthorized
from sluice.http.asgi import Scope, header
from sluice.state.db import describe_error
from sluice.state.keys import ANONYMOUS, MASTER, KeyStore, Principal, hash_key, is_master, key_format

log = logging.getLogger("sluice")

T = TypeVar("T")
V = TypeVar("V")

_VALID_TTL = 30.0
_UNKNOWN_TTL = 5.0  # short: a key looked up on a lagging replica before it existed works soon after
_STALE_GRACE = 3600.0  # during an outage, cached answers are served this long past their TTL
_VALID_MAX = 100_000
_UNKNOWN_MAX = 10_000
_OPEN_RECHECK = 2.0
_RETRY_AFTER = 2  # seconds the database is left alone after a failure; what clients are told
_READY_TTL = 1.0  # a probe storm on /ready costs at most one query per second per worker
_READY_BUDGET = 2.0


class LRUCache(Generic[V]):
    """A bounded map from key hash to (expiry, value); the least recently used entry goes first.

    Expired entries are kept until evicted: during an outage they are the best answer there is.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> tuple[float, V] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, expires: float, value: V) -> None:
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class _Down(Exception):
    """The database did not answer (internal: becomes a 503, or a cached answer)."""


class Authenticator:
    """Turns a request's `Authorization` header into a `Principal`, or a 401, or a 503."""

    def __init__(self, config: Config, engine: AsyncEngine, keys: KeyStore | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.master_key = config.master_key
        self.engine = engine
        self.keys = keys or KeyStore(engine)
        self._clock = clock
        settings = config.database_config()
        # Driver timeouts bound each step (pool wait, pre-ping, connect, statement); this bounds
        # the whole call, whatever path it takes through the pool.
        self._budget = settings.connect_timeout + settings.statement_timeout
        self._required = bool(config.master_key)  # a master key means authentication, always
        self._open_until = 0.0
        self._open_lock = asyncio.Lock()
        self.valid: LRUCache[Principal] = LRUCache(_VALID_MAX)
        self.unknown: LRUCache[None] = LRUCache(_UNKNOWN_MAX)
        self._outage_since: float | None = None
        self._down_until = 0.0
        self._probing = False
        self._ready = False
        self._ready_until = 0.0
        self._ready_lock = asyncio.Lock()

    async def start(self) -> None:
        """Find out whether the gateway is open. A database that cannot answer yet is not fatal."""
        try:
            required = await self._auth_required()
        except _Down:
            log.warning("the database does not answer; requests that need it get 503 until it does")
            return
        if not required:
            log.warning("no master_key and no API keys: the gateway accepts unauthenticated requests "
                        "until a key is created")

    async def authenticate(self, scope: Scope) -> Principal:
        try:
            return await self._authenticate(scope)
        except _Down:
            raise ServiceUnavailable("The API key store is unavailable; try again shortly.",
                                     code="key_store_unavailable", retry_after=_RETRY_AFTER) from None

    async def _authenticate(self, scope: Scope) -> Principal:
        value = header(scope, b"authorization")
        if value is None:
            if not await self._auth_required():
                return ANONYMOUS
            raise Unauthorized("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.",
                               code="missing_api_key")
        scheme, _, key = value.decode("latin-1").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
        if is_master(key, self.master_key):
            return MASTER
        if not await self._auth_required():
            return ANONYMOUS  # no key exists, so no key can be valid: nothing to look up
        if key_format(key) is None:
            raise Unauthorized("Incorrect API key provided.")  # cannot be a key: no database round trip
        principal = await self._lookup(key)
        if principal is None:
            raise Unauthorized("Incorrect API key provided.")
        return principal

    async def _auth_required(self) -> bool:
        if self._required:
            return True
        if self._clock() < self._open_until:
            return False
        async with self._open_lock:  # one recheck at a time, whatever the request rate
            if self._required:
                return True
            if self._clock() < self._open_until:
                return False
            # Fails closed: while the database cannot say that no key exists, nothing is open.
            if await self._db(self.keys.count_active) > 0:
                if self._open_until:
                    log.warning("an API key exists now: authentication is required")
                self._required = True
                return True
            self._open_until = self._clock() + _OPEN_RECHECK
            return False

    async def _lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        now = self._clock()
        valid = self.valid.get(digest)
        if valid is not None and valid[0] > now:
            return valid[1]
        unknown = self.unknown.get(digest)
        if unknown is not None and unknown[0] > now:
            return None
        try:
            principal = await self._db(lambda: self.keys.find(digest))
        except _Down:
            # An answer from before the outage beats refusing a client the gateway knew a moment ago.
            if valid is not None and valid[0] + _STALE_GRACE > now:
                return valid[1]
            if unknown is not None and unknown[0] + _STALE_GRACE > now:
                return None
            raise
        now = self._clock()
        if principal is not None:
            self.valid.put(digest, now + _VALID_TTL, principal)
            self.unknown.discard(digest)
        else:
            self.unknown.put(digest, now + _UNKNOWN_TTL, None)
            self.valid.discard(digest)  # revoked
        return principal

    async def _db(self, call: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        """One database call, bounded in time; any failure is `_Down`, and trips the breaker."""
        now = self._clock()
        if now < self._down_until or self._probing:
            raise _Down  # failed a moment ago, or being probed: answer now instead of waiting too
        probing = self._outage_since is not None
        self._probing = probing
        try:
            async with asyncio.timeout(budget or self._budget):
                result = await call()
        except Exception as exc:  # refused, reset, timed out, locked, missing table: no answer
            now = self._clock()
            if self._outage_since is None:
                self._outage_since = now
                log.warning("the database does not answer: %s", describe_error(exc))
            self._down_until = now + _RETRY_AFTER
            # Every call is a readiness probe: /ready says so at once, without asking again.
            self._ready, self._ready_until = False, self._down_until
            raise _Down from None
        finally:
            if probing:
                self._probing = False
        now = self._clock()
        if self._outage_since is not None:
            log.info("the database answers again (after %.1f s)", now - self._outage_since)
            self._outage_since = None
            self._down_until = 0.0
        self._ready, self._ready_until = True, now + _READY_TTL
        return result

    async def ready(self) -> bool:
        """Whether the database answers: cached briefly, probed by one request at a time."""
        if self._clock() < self._ready_until:
            return self._ready
        async with self._ready_lock:
            if self._clock() < self._ready_until:
                return self._ready
            with contextlib.suppress(_Down):
                await self._db(self._ping, min(_READY_BUDGET, self._budget))
            return self._ready  # set by `_db`, either way

    async def _ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
