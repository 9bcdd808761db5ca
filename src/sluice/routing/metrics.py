"""Live route metrics, measured by the gateway itself: the numbers live-metric sorts read.

SKELETON — to be implemented (issue 9): time-bucketed per route label (`provider/model`), O(1)
per `record`, read for a window (`interval`) by `value`. `drain` / `merge_remote` let
`routing/shared.py` aggregate every replica's measurements in Redis, in the background.
"""

from __future__ import annotations

from typing import Any


class RouteMetrics:
    def record(self, label: str, *, ok: bool, latency: float, ttft: float | None, output_tokens: int | None,
               input_tokens: int | None = None, now: float | None = None) -> None:
        """One finished attempt: success or failure, seconds end to end and to first token, tokens."""

    def value(self, label: str, metric: str, interval: float, now: float | None = None) -> float | None:
        """`metric` (a sort name: avg_latency, p50_latency, p90_e2e_latency, uptime, throughput, ...)
        over the last `interval` seconds; None when the route has no measurement in that window."""
        return None

    def drain(self) -> Any:
        """The measurements recorded locally since the last drain (to push to Redis)."""
        return None

    def merge_remote(self, snapshot: Any) -> None:
        """Every replica's measurements as last read from Redis (replaces the previous remote view)."""
