"""Cache affinity: requests that share a prompt prefix stick to the route that served the last one.

SKELETON — being implemented (issue 9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.config import AffinityConfig
from sluice.routing.catalog import Route

if TYPE_CHECKING:
    from sluice.pipeline.context import RequestContext


class Affinity:
    def __init__(self, config: AffinityConfig) -> None:
        self.config = config
        # Affinities learned here and not yet shared: (key, route label, expires (wall clock), cached tokens).
        self.changes: list[tuple[str, str, float, int]] = []

    def served(self, ctx: RequestContext, route: Route, usage: dict[str, Any]) -> None:
        """A route served the request: it holds the prefix's cache for the provider's cache lifetime."""

    def apply_remote(self, key: str, label: str, expires: float, cached_tokens: int) -> None:
        """An affinity another replica learned."""
