"""Cache affinity: requests that share a prompt prefix stick to the route that served the last one.

Prompt caches live inside one provider (one account, often one machine pool): moving a
conversation to another route loses the cached prefix and pays full price and latency for it
again. So the route that served a prefix is remembered for the provider's cache lifetime (5
minutes; an hour when the request asks `cache_control.ttl: 1h`) and tried first next time, while
it is healthy. A prefix is identified, per caller, by the first that applies:

1. the client's `prompt_cache_key`;
2. the `previous_response_id` chain (each served response is remembered under its id);
3. the instructions, tools and leading system/developer messages.

A request with none of these, or whose model has a single candidate, has no affinity and costs
nothing here. `changes` / `apply_remote` let `routing/shared.py` share affinities across replicas.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

from sluice.config import AffinityConfig
from sluice.routing.catalog import Route

if TYPE_CHECKING:
    from sluice.canonical.request import CanonicalRequest
    from sluice.pipeline.context import RequestContext
    from sluice.state.keys import Principal

_encode = msgspec.json.encode
_LEADING_ROLES = ("system", "developer")


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _caller(caller: Principal) -> bytes:
    return f"{caller.key_id}:{caller.name}".encode()


class Affinity:
    def __init__(self, config: AffinityConfig) -> None:
        self.config = config
        # key -> (route label, expires (wall clock), tokens the route holds cached for the prefix)
        self._entries: OrderedDict[str, tuple[str, float, int]] = OrderedDict()
        # Affinities learned here and not yet shared: (key, route label, expires, cached tokens);
        # kept only while `routing/shared.py` drains them (`sharing`), else they would pile up.
        self.changes: list[tuple[str, str, float, int]] = []
        self.sharing = False

    def key(self, ctx: RequestContext) -> str | None:
        """The request's prefix key (see the module doc), or None when it has none to share."""
        req = ctx.client_request.req
        who = _caller(ctx.caller)
        if req.prompt_cache_key:
            return "k" + _digest(who, req.prompt_cache_key.encode())
        if req.previous_response_id:
            return "r" + _digest(who, req.previous_response_id.encode())
        leading = []
        for item in ctx.request.items:
            if item.get("type", "message") != "message" or item.get("role") not in _LEADING_ROLES:
                break
            leading.append(item)
        if not req.instructions and not req.tools and not leading:
            return None
        return "p" + _digest(who, (req.instructions or "").encode(), _encode(req.tools or ()), _encode(leading))

    def lookup(self, key: str, now: float | None = None) -> tuple[str, int] | None:
        """(route label, cached tokens) of the route holding this prefix, while its cache lives."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= (time.time() if now is None else now):
            del self._entries[key]
            return None
        return entry[0], entry[2]

    def served(self, ctx: RequestContext, route: Route, usage: dict[str, Any]) -> None:
        """A route served the request: it holds the prefix's cache for the provider's cache lifetime."""
        key = ctx.routing.get("affinity")
        if key is None:
            return
        details = usage.get("input_tokens_details") or {}
        # What the next request can read from the cache: what this one read plus what it wrote.
        warm = (details.get("cached_tokens") or 0) + (details.get("cached_tokens_created") or 0)
        expires = time.time() + (self.config.ttl_1h if _asks_one_hour(ctx.request) else self.config.ttl)
        label = route.label
        self._remember(key, label, expires, warm)
        if self.sharing:
            self.changes.append((key, label, expires, warm))
        if ctx.client_request.req.store is not False:
            # The next turn (`previous_response_id` = this response) continues the same prefix.
            chained = "r" + _digest(_caller(ctx.caller), ctx.response_id.encode())
            self._remember(chained, label, expires, warm)
            if self.sharing:
                self.changes.append((chained, label, expires, warm))

    def apply_remote(self, key: str, label: str, expires: float, cached_tokens: int) -> None:
        """An affinity another replica learned."""
        current = self._entries.get(key)
        if current is None or expires > current[1]:
            self._remember(key, label, expires, cached_tokens)

    def _remember(self, key: str, label: str, expires: float, warm: int) -> None:
        entries = self._entries
        entries[key] = (label, expires, warm)
        entries.move_to_end(key)
        while len(entries) > self.config.max_entries:
            entries.popitem(last=False)


def _asks_one_hour(request: CanonicalRequest) -> bool:
    req = request.req
    if req.cache_control is not None and req.cache_control.ttl == "1h":
        return True
    return any(isinstance(mark := thing.get("cache_control"), dict) and mark.get("ttl") == "1h"
               for thing in itertools.chain(req.tools or (), request.items))


def derived_prompt_cache_key(caller: Principal, user: str | None) -> str:
    """A `prompt_cache_key` for a request that sends none: per API key (and `user` when given).

    As the reference describes: requests of one key (one end user) share the provider's cache
    bucket, instead of being spread over buckets by the provider's own guess.
    """
    return _derived(caller.key_id, caller.name, user)


@functools.lru_cache(maxsize=4096)
def _derived(key_id: int | None, name: str, user: str | None) -> str:
    # Cached: the same few keys ask again and again, and this is on every request's path.
    return "sluice-" + _digest(f"{key_id}:{name}".encode(), (user or "").encode())
