"""Route health: a route that keeps failing is taken out of rotation, then probed back in.

Per route label (`provider/model`), a small circuit breaker:

- **closed** (in rotation): failures are counted. `failures` consecutive ones, or an error share
  of `error_rate` among at least `min_requests` attempts within `window` seconds, open it.
- **open** (cooling down): the attempt loop skips the route (trace outcome "cooldown") for
  `duration` seconds, doubled each time it opens again without a success in between, up to
  `max_duration`.
- **half-open**: once the cooldown is over, one request at a time may probe the route; a success
  closes it, a failure opens it again for longer.

A 429 with `Retry-After` puts the route in cooldown for that long (the provider said when to come
back), at most `max_duration`: past it the route is probed like any other. Cooldown ends are
wall-clock times, so `routing/shared.py` can share them between replicas (`changes` /
`apply_remote`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sluice.config import CooldownConfig
from sluice.errors import CLIENT_FAULT, CONTEXT_LENGTH_EXCEEDED, UpstreamError

# Statuses that say nothing about the route's health: the request's fault, or the client leaving.
_NOT_THE_ROUTE = CLIENT_FAULT | {499}

# The error-rate window is counted in this many slots: O(1) per outcome, whatever the traffic.
_SLOTS = 6
# Routes tracked; past it the oldest is forgotten. Ad-hoc `provider/any-model` routes make labels
# from client input, so the map must be bounded (as `RouteMetrics` is).
MAX_ROUTES = 4096

RATE_LIMITED = "rate_limited"
FAILING = "failing"


@dataclass(slots=True)
class _Route:
    consecutive: int = 0
    until: float = 0.0  # wall clock: end of the current cooldown (0: none)
    reason: str = ""  # why the cooldown: RATE_LIMITED or FAILING
    strikes: int = 0  # cooldowns opened since the last success (for the doubling)
    probe_until: float = 0.0  # wall clock: a half-open probe is in flight until then
    # Outcomes over the error-rate window, in `_SLOTS` time slots: [slot number, successes, failures].
    slots: list[list[int]] = field(default_factory=lambda: [[-1, 0, 0] for _ in range(_SLOTS)])

    def tally(self, slot: int) -> tuple[int, int]:
        """(attempts, failures) in the window ending in `slot`."""
        total = failed = 0
        for number, ok, bad in self.slots:
            if slot - number < _SLOTS:
                total += ok + bad
                failed += bad
        return total, failed


class RouteHealth:
    def __init__(self, config: CooldownConfig) -> None:
        self.config = config
        self._routes: dict[str, _Route] = {}
        # Cooldowns opened here and not yet shared: (label, until, reason).
        # (kept only while `routing/shared.py` drains them: `sharing`)
        self.changes: list[tuple[str, float, str]] = []
        self.sharing = False

    @staticmethod
    def counts(error: UpstreamError) -> bool:
        """Whether a failure is the route's (a context-length or malformed request is not)."""
        return error.status not in _NOT_THE_ROUTE and error.code != CONTEXT_LENGTH_EXCEEDED

    def cooling(self, label: str, now: float | None = None) -> tuple[str, float] | None:
        """(reason, seconds left) when the route must be skipped now; None when it may be tried.

        Past a cooldown, the first caller becomes the half-open probe and is let through; others
        skip the route until the probe's answer (or its time) is in.
        """
        state = self._routes.get(label)
        if state is None or not state.until or not self.config.enabled:
            return None
        now = time.time() if now is None else now
        if now < state.until:
            return state.reason, state.until - now
        if now < state.probe_until:
            return state.reason, state.probe_until - now
        state.probe_until = now + self.config.duration  # this caller probes
        return None

    def is_cooling(self, label: str, now: float | None = None) -> bool:
        """Whether the route is in a cooldown now (a look only: it does not claim the half-open probe)."""
        state = self._routes.get(label)
        if state is None or not state.until or not self.config.enabled:
            return False
        now = time.time() if now is None else now
        return now < state.until or now < state.probe_until

    def reason(self, label: str) -> str:
        state = self._routes.get(label)
        return state.reason if state is not None else ""

    def until(self, label: str) -> float:
        state = self._routes.get(label)
        return state.until if state is not None else 0.0

    def release(self, label: str) -> None:
        """A half-open probe ended without an answer about the route (the client left, the request's
        own fault, or it was never sent): the next caller probes instead of waiting for `duration`."""
        state = self._routes.get(label)
        if state is not None:
            state.probe_until = 0.0

    def _state(self, label: str) -> _Route:
        state = self._routes.get(label)
        if state is None:
            routes = self._routes
            if len(routes) >= MAX_ROUTES:
                del routes[next(iter(routes))]
            state = routes[label] = _Route()
        return state

    def success(self, label: str) -> None:
        if not self.config.enabled:
            return
        state = self._state(label)
        if state.until:  # a probe (or a request let through as the last resort) succeeded
            state.strikes = 0
            state.until = state.probe_until = 0.0
        state.consecutive = 0
        self._count(state, time.time(), True)

    def failure(self, label: str, error: UpstreamError) -> None:
        if not self.config.enabled or not self.counts(error):
            return
        now = time.time()
        state = self._state(label)
        state.consecutive += 1
        slot = self._count(state, now, False)
        if error.status == 429 and error.retry_after:
            self._open(label, state, now + min(error.retry_after, self.config.max_duration), RATE_LIMITED)
            return
        config = self.config
        probing = state.until and now >= state.until  # a half-open probe failed
        total, failed = state.tally(slot)
        if probing or state.consecutive >= config.failures or (
                total >= config.min_requests and failed >= config.error_rate * total):
            # (strikes keep growing while a route fails as the last resort: 2**1024 overflows a float)
            duration = min(config.duration * 2 ** min(state.strikes, 64), config.max_duration)
            state.strikes += 1
            self._open(label, state, now + duration, FAILING)

    def apply_remote(self, label: str, until: float, reason: str) -> None:
        """A cooldown another replica opened."""
        until = min(until, time.time() + self.config.max_duration)  # never longer than one opened here
        state = self._state(label)
        if until > state.until:
            state.until, state.reason, state.probe_until = until, reason, 0.0

    def _open(self, label: str, state: _Route, until: float, reason: str) -> None:
        state.until, state.reason, state.probe_until = until, reason, 0.0
        state.consecutive = 0
        if self.sharing:
            self.changes.append((label, until, reason))

    def _count(self, state: _Route, now: float, ok: bool) -> int:
        """Count an outcome in its time slot; returns the slot number."""
        number = int(now * _SLOTS / self.config.window)
        slot = state.slots[number % _SLOTS]
        if slot[0] != number:
            slot[0], slot[1], slot[2] = number, 0, 0
        slot[1 if ok else 2] += 1
        return number
