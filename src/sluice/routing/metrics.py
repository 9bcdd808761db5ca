"""Live route metrics, measured by the gateway itself: the numbers live-metric sorts read.

Per route label (`provider/model`), time buckets of additive counters: one bucket per wall-clock
minute for the last hour, one per hour for the last 7 days. `record` adds one finished attempt to
the current minute's bucket (a handful of list operations, nothing that grows with history);
`value` sums the buckets a window covers and derives the metric from the sums (cached ~1 s, so
a busy gateway does not re-merge per request). Minute buckets older than an hour are folded into
their hour's bucket lazily, when a route's minute changes.

What each metric means (docs/routing.md, "Live metrics"); only attempts the route is answerable
for are recorded (`LiveRouting.observe` leaves out the request's own faults and client hang-ups):

- `total_requests`: attempts in the window, failed ones included;
- `uptime`: the share of them that succeeded (0..1);
- `avg_latency`, `min_latency`, `max_latency`, `pNN_latency`: time to first token (s) of
  successful attempts; for a non-streamed answer the first token is the whole answer;
- `avg_e2e_latency`, `pNN_e2e_latency`: start to end of successful attempts (s);
- `throughput`: output tokens per second of generation, summed over successful attempts before
  dividing (so a 3-token answer does not weigh like a 3,000-token one); generation is end minus
  first token for a stream, and the whole attempt for an answer that arrived at once;
- `input_tokens`, `output_tokens`, `total_tokens`: averages per successful attempt that reported
  usage.

Percentiles come from fixed log-scale histograms (64 bins, ratio 1.25, 1 ms to ~17 min; below
1 ms one bin, above it the last), interpolated inside the bin: within 25% of the exact value.

Replicas share their measurements through `routing/shared.py` and Redis: `drain` hands over the
minute-bucket deltas recorded here since the last drain, `merge_remote` installs every replica's
aggregated buckets. Only additive fields travel (`FIELDS`); the exact minimum and maximum stay
local, and with a fresh remote view `min_latency` / `max_latency` come from the histogram.
"""

from __future__ import annotations

import math
import re
import time
from array import array
from collections.abc import Mapping, Sequence
from functools import lru_cache
from operator import add
from typing import TypeVar

from sluice.config import INTERVAL_PATTERN

# --- bucket layout --------------------------------------------------------------------------------
# A bucket is a flat list of floats (an array once folded into an hour): the additive fields, in
# the order of FIELDS, then the local-only minimum and maximum time to first token.
BINS = 64
RATIO = 1.25
_FIRST_EDGE = 0.001  # seconds: bin 0 is [0, 1 ms), bin i >= 1 is [1 ms * 1.25**(i-1), 1 ms * 1.25**i)
_SCALARS = ("requests", "successes", "ttft_count", "ttft_sum", "e2e_sum", "output_count", "output_sum",
            "input_count", "input_sum", "gen_tokens", "gen_seconds")
(_N, _OK, _TTFT_N, _TTFT_S, _E2E_S, _OUT_N, _OUT_S, _IN_N, _IN_S, _GEN_TOK, _GEN_S) = range(len(_SCALARS))
_T0 = len(_SCALARS)  # time-to-first-token histogram: fields "t0".."t63"
_E0 = _T0 + BINS  # end-to-end histogram: fields "e0".."e63"
_ADDITIVE = _E0 + BINS
_MIN = _ADDITIVE
_MAX = _ADDITIVE + 1
# The names of the additive fields `drain` emits and `merge_remote` reads.
FIELDS: tuple[str, ...] = _SCALARS + tuple(f"t{i}" for i in range(BINS)) + tuple(f"e{i}" for i in range(BINS))
_INDEX = {name: i for i, name in enumerate(FIELDS)}
# Lower edge of each bin, plus the upper edge of the last (treated as one bin wide).
_EDGES = [0.0] + [_FIRST_EDGE * RATIO ** i for i in range(BINS)]
_SCALE = 1.0 / _FIRST_EDGE
_INV_LOG_RATIO = 1.0 / math.log(RATIO)
_log = math.log
_B = TypeVar("_B")
_EMPTY = [0.0] * _ADDITIVE + [math.inf, 0.0]

# --- retention and windows -------------------------------------------------------------------------
MINUTES_KEPT = 60  # minute buckets older than this many minutes are folded into their hour
HOURS_KEPT = 7 * 24  # hour buckets older than this many hours are dropped
REMOTE_FRESH = 10.0  # seconds: the remote view is used while merged at most this long ago
CACHE_TTL = 1.0  # seconds a computed value is reused
MAX_LABELS = 1024  # series kept; past it the least recently active route is forgotten
_MAX_CACHED = 4096  # cached values (label x metric x window): cleared when over

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_INTERVAL = re.compile(INTERVAL_PATTERN)


@lru_cache(maxsize=256)
def parse_interval(text: str) -> int:
    """A window (`"15m"`, `"15 minutes"`, `"1h"`, `"24h"`, `"7d"`, `"2w"`, `"1y"`) in seconds.

    At least a minute, the buckets' resolution. Windows past the 7 days kept read those 7 days.
    """
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(f"not a window: {text!r} (expected e.g. '15m', '1h', '24h', '7d')")
    return max(int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0]], 60)


_HIGHER_IS_BETTER = frozenset({"uptime", "throughput", "total_requests"})
_METRIC = re.compile(r"^(?:(avg|min|max)_latency|p(\d+)_latency|avg_e2e_latency|p(\d+)_e2e_latency|uptime|throughput"
                     r"|total_requests|input_tokens|output_tokens|total_tokens)$")


def is_live(sort: str | None) -> bool:
    """Whether a sort reads live metrics (everything but `cost` and `performance`)."""
    return sort is not None and sort not in ("cost", "performance")


def higher_is_better(metric: str) -> bool:
    """`uptime`, `throughput`, `total_requests` (a proven route first); for the rest, lower is better."""
    return metric in _HIGHER_IS_BETTER


@lru_cache(maxsize=512)
def _parse_metric(metric: str) -> tuple[str, float]:
    """(kind, quantile) of a metric name: ("p", 0.9) for p90_latency, ("pe", 0.5) for p50_e2e_latency."""
    match = _METRIC.match(metric)
    if match is None:
        raise ValueError(f"unknown metric {metric!r}")
    if match.group(1):
        return match.group(1), 0.0
    if match.group(2) is not None:
        return "p", min(int(match.group(2)), 100) / 100
    if match.group(3) is not None:
        return "pe", min(int(match.group(3)), 100) / 100
    return metric, 0.0


class _Series:
    """One route's local buckets: minute index -> list, hour index -> array (folded minutes)."""

    __slots__ = ("current", "hours", "minute", "minutes", "rewinds", "sent")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        # Times the clock went back (an earlier minute written again): sums cached of the
        # minutes before the current one are stale then.
        self.rewinds = 0
        self.current = _EMPTY.copy()
        self.minutes: dict[int, list[float]] = {minute: self.current}
        self.hours: dict[int, array[float]] = {}
        # Minute bucket -> its additive fields when last drained (only once `drain` is used).
        self.sent: dict[int, list[float]] = {}

    def open(self, minute: int) -> list[float]:
        """Make `minute` the bucket `record` writes to; fold and drop what fell out of retention."""
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = _EMPTY.copy()
        if minute < self.minute:
            self.rewinds += 1
        self.minute, self.current = minute, bucket
        floor = minute - MINUTES_KEPT
        for old in [m for m in self.minutes if m < floor]:
            folded = self.minutes.pop(old)
            self.sent.pop(old, None)
            hour = old // 60
            into = self.hours.get(hour)
            self.hours[hour] = array("d", folded) if into is None else _combined(into, folded)
        hour_floor = minute // 60 - HOURS_KEPT
        for old in [h for h in self.hours if h < hour_floor]:
            del self.hours[old]
        return bucket


def _combined(into: array[float], bucket: list[float]) -> array[float]:
    low, high = min(into[_MIN], bucket[_MIN]), max(into[_MAX], bucket[_MAX])
    total = array("d", map(add, into, bucket))
    total[_MIN], total[_MAX] = low, high
    return total


def _summed(buckets: Sequence[list[float] | array[float]]) -> list[float]:
    if not buckets:
        return _EMPTY.copy()
    total = list(map(sum, zip(*buckets, strict=True)))  # column sums, C-speed; min and max are not sums:
    total[_MIN] = min(bucket[_MIN] for bucket in buckets)
    total[_MAX] = max(bucket[_MAX] for bucket in buckets)
    return total


class RouteMetrics:
    """Per-process live metrics of every route, optionally with every replica's view from Redis."""

    def __init__(self, *, cache_ttl: float = CACHE_TTL) -> None:
        self.cache_ttl = cache_ttl
        self._local: dict[str, _Series] = {}  # least recently active first (see `record`)
        self._remote_minutes: Mapping[str, Mapping[int, Mapping[str, float]]] = {}
        self._remote_hours: Mapping[str, Mapping[int, Mapping[str, float]]] = {}
        self._remote_at: float | None = None
        # (label, metric, window) -> (computed at, value); (label, window) -> (computed at, sums).
        self._values: dict[tuple[str, str, float], tuple[float, float | None]] = {}
        self._sums: dict[tuple[str, float], tuple[float, tuple[list[float], bool] | None]] = {}
        # (label, window) -> (minute, series, its rewinds, local sums of the buckets before that minute).
        self._closed: dict[tuple[str, float], tuple[int, _Series, int, list[float]]] = {}

    # --- the request path ----------------------------------------------------------------------

    def record(self, label: str, *, ok: bool, latency: float, ttft: float | None, output_tokens: int | None,
               input_tokens: int | None = None, now: float | None = None) -> None:
        """One finished attempt: success or failure, seconds end to end and to first token, tokens.

        `now`: wall-clock seconds (minute buckets are shared between replicas by wall time).
        """
        minute = int((time.time() if now is None else now) // 60)
        series = self._local.get(label)
        if series is None:
            if len(self._local) >= MAX_LABELS:
                # Ad-hoc `provider/any-model` routes make labels from client input: bounded.
                del self._local[next(iter(self._local))]
            series = self._local[label] = _Series(minute)
        bucket = series.current
        if minute != series.minute:
            bucket = series.open(minute)
            # Once a minute per route: re-inserting keeps the dict least recently active first.
            del self._local[label]
            self._local[label] = series
        bucket[_N] += 1
        if not ok:
            return
        bucket[_OK] += 1
        bucket[_E2E_S] += latency
        index = int(_log(latency * _SCALE) * _INV_LOG_RATIO) + 1 if latency >= _FIRST_EDGE else 0
        bucket[_E0 + (index if index < BINS else BINS - 1)] += 1
        generation = latency
        if ttft is not None:
            bucket[_TTFT_N] += 1
            bucket[_TTFT_S] += ttft
            index = int(_log(ttft * _SCALE) * _INV_LOG_RATIO) + 1 if ttft >= _FIRST_EDGE else 0
            bucket[_T0 + (index if index < BINS else BINS - 1)] += 1
            if ttft < bucket[_MIN]:
                bucket[_MIN] = ttft
            if ttft > bucket[_MAX]:
                bucket[_MAX] = ttft
            if latency - ttft >= _FIRST_EDGE:  # else the answer came at once: the whole attempt generated it
                generation = latency - ttft
        if output_tokens is not None:
            bucket[_OUT_N] += 1
            bucket[_OUT_S] += output_tokens
            if generation > 0:
                bucket[_GEN_TOK] += output_tokens
                bucket[_GEN_S] += generation
        if input_tokens is not None:
            bucket[_IN_N] += 1
            bucket[_IN_S] += input_tokens

    def value(self, label: str, metric: str, interval: float, now: float | None = None) -> float | None:
        """`metric` (a sort name: avg_latency, p50_latency, p90_e2e_latency, uptime, throughput, ...)
        over the last `interval` seconds; None when the route has no measurement for it in that window.

        The window starts at the bucket holding `now - interval`: it covers the interval and at
        most one bucket (a minute; an hour past 60 minutes) more.
        """
        now = time.time() if now is None else now
        key = (label, metric, interval)
        hit = self._values.get(key)
        if hit is not None and hit[0] <= now < hit[0] + self.cache_ttl:
            return hit[1]
        kind, quantile = _parse_metric(metric)
        sums = self._window(label, interval, now)
        result = None if sums is None else _derive(sums[0], kind, quantile, exact_extremes=sums[1])
        if len(self._values) >= _MAX_CACHED:
            self._values.clear()  # metric and window come from requests: bounded
        self._values[key] = (now, result)
        return result

    # --- sharing between replicas (routing/shared.py) -------------------------------------------

    def drain(self) -> list[tuple[str, int, dict[str, float]]]:
        """The minute-bucket deltas recorded here since the last drain, to add to Redis.

        (label, minute index = int(wall_time // 60), {field: delta}); every field is additive
        (`FIELDS`: counts, sums, histogram bins "t12" / "e7"), and zero fields are left out. A
        minute's data belongs to its hour too (hour index = minute index // 60).
        """
        out = []
        for label, series in self._local.items():
            sent = series.sent
            for minute, bucket in series.minutes.items():
                before = sent.get(minute)
                if before is None:
                    delta = {FIELDS[i]: bucket[i] for i in range(_ADDITIVE) if bucket[i]}
                elif before[_N] == bucket[_N]:
                    continue  # every record counts a request: unchanged since the last drain
                else:
                    delta = {FIELDS[i]: bucket[i] - before[i] for i in range(_ADDITIVE) if bucket[i] != before[i]}
                sent[minute] = bucket[:_ADDITIVE]
                out.append((label, minute, delta))
        return out

    def merge_remote(self, minutes: Mapping[str, Mapping[int, Mapping[str, float]]],
                     hours: Mapping[str, Mapping[int, Mapping[str, float]]], now: float | None = None) -> None:
        """Install every replica's aggregated buckets, as read from Redis (replaces the last view).

        `minutes`: label -> minute index -> fields; `hours`: label -> hour index -> fields, each
        hour holding all of its minutes (the current one's so far). The view is read while it is
        fresh (merged within `REMOTE_FRESH` seconds); after that, or for a route it does not
        know, the local buckets answer: Redis being down costs the sharing, never the routing.
        Kept as given and summed only when a window is read, so merging is cheap.
        """
        self._remote_minutes, self._remote_hours = minutes, hours
        self._remote_at = time.time() if now is None else now
        self._values.clear()
        self._sums.clear()

    # --- windows ---------------------------------------------------------------------------------

    def _window(self, label: str, interval: float, now: float) -> tuple[list[float], bool] | None:
        """The summed fields of `label` over the window, and whether min/max are exact; None: no data."""
        key = (label, interval)
        hit = self._sums.get(key)
        if hit is not None and hit[0] <= now < hit[0] + self.cache_ttl:
            return hit[1]
        start = now - interval
        remote = self._remote_at is not None and now - self._remote_at <= REMOTE_FRESH and (
            label in self._remote_minutes or label in self._remote_hours)
        result: tuple[list[float], bool] | None
        if remote:
            if interval <= 3600:
                picked = _between(self._remote_minutes.get(label), int(start // 60), int(now // 60))
            else:
                picked = _between(self._remote_hours.get(label), int(start // 3600), int(now // 3600))
            total = _EMPTY.copy()
            for fields in picked:
                for name, amount in fields.items():
                    index = _INDEX.get(name)
                    if index is not None:
                        total[index] += float(amount)
            result = (total, False) if total[_N] else None
        else:
            series = self._local.get(label)
            if series is None:
                return None
            # The buckets before the current minute do not change while the clock moves on, so
            # their sum is kept for the minute: a second's recomputation adds one bucket to it.
            last = int(now // 60)
            closed = self._closed.get(key)
            if closed is None or closed[0] != last or closed[1] is not series or closed[2] != series.rewinds:
                buckets: list[list[float] | array[float]]
                if interval <= 3600:
                    buckets = _between(series.minutes, int(start // 60), last - 1)
                else:
                    # Folded hours, plus the minutes of the last hour that are not folded yet.
                    first_hour = int(start // 3600)
                    buckets = _between(series.hours, first_hour, int(now // 3600))
                    buckets += [b for m, b in series.minutes.items() if m // 60 >= first_hour and m < last]
                closed = (last, series, series.rewinds, _summed(buckets))
                if len(self._closed) >= _MAX_CACHED:
                    self._closed.clear()
                self._closed[key] = closed
            current = series.minutes.get(last)
            total = closed[3] if current is None else _summed((closed[3], current))
            result = (total, True) if total[_N] else None
        if len(self._sums) >= _MAX_CACHED:
            self._sums.clear()
        self._sums[key] = (now, result)
        return result


def _between(buckets: Mapping[int, _B] | None, first: int, last: int) -> list[_B]:
    """The buckets numbered first..last (a dict scan: at most ~170 of them, in no order)."""
    if not buckets:
        return []
    return [bucket for index, bucket in buckets.items() if first <= index <= last]


def _derive(total: list[float], kind: str, quantile: float, *, exact_extremes: bool) -> float | None:
    """A metric from a window's summed fields; None when the window holds nothing it could use."""
    if kind == "total_requests":
        return total[_N]
    if kind == "uptime":
        return total[_OK] / total[_N]
    if kind in ("avg", "min", "max", "p"):
        if not total[_TTFT_N]:
            return None
        if kind == "avg":
            return total[_TTFT_S] / total[_TTFT_N]
        if kind != "p" and exact_extremes:
            return total[_MIN] if kind == "min" else total[_MAX]
        return _percentile(total, _T0, 0.0 if kind == "min" else 1.0 if kind == "max" else quantile)
    if kind == "avg_e2e_latency":
        return total[_E2E_S] / total[_OK] if total[_OK] else None
    if kind == "pe":
        return _percentile(total, _E0, quantile) if total[_OK] else None
    if kind == "throughput":
        return total[_GEN_TOK] / total[_GEN_S] if total[_GEN_S] > 0 else None
    output = total[_OUT_S] / total[_OUT_N] if total[_OUT_N] else None
    if kind == "output_tokens":
        return output
    given = total[_IN_S] / total[_IN_N] if total[_IN_N] else None
    if kind == "input_tokens":
        return given
    return None if output is None and given is None else (output or 0.0) + (given or 0.0)  # total_tokens


def _percentile(total: list[float], base: int, quantile: float) -> float | None:
    """The quantile of a histogram, interpolated inside its bin (geometrically: the bins are)."""
    count = sum(total[base:base + BINS])
    if not count:
        return None
    target = quantile * count
    seen = 0.0
    for i in range(BINS):
        inside = total[base + i]
        if inside and seen + inside >= target:
            share = (target - seen) / inside
            low = _EDGES[i]
            if i == 0:
                return _EDGES[1] * share
            return low * RATIO ** share
        seen += inside
    return _EDGES[BINS]  # not reached: the last non-empty bin holds the target
