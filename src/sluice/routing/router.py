"""Which routes may serve a request, in the order to try them.

The model's routes (a pinned provider first), then those of `routing.model.fallbacks` (or every
model for `model: "auto"`), keeping only routes whose declared capabilities and context window
cover the request; ordered by `routing.model.sort` / `routing.provider.sort` (cost, performance,
or a live metric the gateway measures: routing/metrics.py) and restricted by
`routing.provider.fallbacks`. Semantics and examples: docs/routing.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from sluice.accounting.estimate import estimate_usage, tokens_for
from sluice.canonical.request import CanonicalRequest, ProviderRouting
from sluice.config import RoutingConfig
from sluice.errors import GatewayError, InvalidRequest, NotFound
from sluice.routing.catalog import Catalog, Route
from sluice.routing.metrics import RouteMetrics, higher_is_better, is_live, parse_interval

# capability -> (param to name in the error, what it is)
_NEEDS = {
    "tools": ("tools", "Function tools"),
    "images": ("input", "Image input"),
    "files": ("input", "File input"),
    "json_schema": ("text.format", "Structured output (json_schema)"),
    "reasoning": ("reasoning.effort", "Reasoning"),
    "logprobs": ("include", "Logprobs"),
}


def required_capabilities(parsed: CanonicalRequest) -> list[str]:
    req = parsed.req
    needs = []
    if req.tools and any(tool.get("type") in ("function", "custom", "namespace") for tool in req.tools):
        needs.append("tools")
    images = files = False
    for item in parsed.items:
        content = item.get("content") if item.get("type") == "message" else item.get("output")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                images = images or kind == "input_image"
                files = files or kind == "input_file"
    if images:
        needs.append("images")
    if files:
        needs.append("files")
    if req.text and req.text.format and req.text.format.get("type") == "json_schema":
        needs.append("json_schema")
    if req.reasoning and req.reasoning.effort not in (None, "none"):
        needs.append("reasoning")
    if req.top_logprobs or parsed.wants("message.output_text.logprobs"):
        needs.append("logprobs")
    return needs


def plan(parsed: CanonicalRequest, catalog: Catalog, config: RoutingConfig | None = None, *,
         metrics: RouteMetrics | None = None) -> Sequence[Route]:
    """Candidate routes in order; raises `NotFound` / `InvalidRequest` when there are none.

    `metrics`: the gateway's live measurements, read by live-metric sorts and by `cost` (the
    recent average output of a route); without them those sorts keep the config order and
    `cost` assumes `DEFAULT_OUTPUT_TOKENS`. The semantics, with examples, are in docs/routing.md.
    """
    req = parsed.req
    routing = req.routing
    config = config or _DEFAULT_CONFIG
    auto = req.model.lower() == AUTO and catalog.lookup(req.model) is None
    if routing is None and not auto and config.sort is None:
        routes = catalog.resolve(req.model)
        if len(routes) <= 1:
            return _able(parsed, routes, None)  # one route: nothing to order, the upstream judges its size
    model_routing = routing.model if routing is not None else None
    provider_routing = routing.provider if routing is not None else None
    # One group of routes per model, in the order asked: the model (a pinned provider first), then
    # each of routing.model.fallbacks; for "auto", every model of the catalog.
    groups: list[list[Route]]
    pinned = 0
    if auto:
        groups = [list(entry.routes) for entry in catalog.models.values()]
        if not groups:
            raise NotFound("No model is configured, so `auto` has nothing to choose from.", param="model",
                           code="model_not_found")
    else:
        first = list(catalog.resolve(req.model))
        pin = catalog.pinned_provider(req.model)
        if pin is not None:
            pinned = sum(1 for route in first if route.provider == pin)
        groups = [first]
    if model_routing is not None:
        for i, fallback in enumerate(model_routing.fallbacks):
            try:
                groups.append(list(catalog.resolve(fallback)))
            except GatewayError as exc:
                exc.param = f"routing.model.fallbacks[{i}]"
                raise
    allowed = _provider_fallbacks(provider_routing, catalog)
    model_sort = (model_routing.sort if model_routing is not None else None) or config.sort
    provider_sort = (provider_routing.sort if provider_routing is not None else None) or config.sort
    if auto and model_sort is None:
        model_sort = "cost" if config.auto == "cheapest" else "performance"
    if metrics is None:
        model_sort, provider_sort = _known(model_sort), _known(provider_sort)
    live = None
    if metrics is not None and (is_live(model_sort) or is_live(provider_sort) or "cost" in (model_sort, provider_sort)):
        interval = (provider_routing.interval if provider_routing is not None else None) or config.interval
        live = _Live(metrics, parse_interval(interval), time.time())

    estimate = _Estimate(parsed, live)
    all_routes = [route for group in groups for route in group]
    candidates = _able(parsed, all_routes, estimate, auto=auto)
    keep = {id(route) for route in candidates}
    seen: set[tuple[str, str]] = set()
    kept_groups: list[list[Route]] = []
    kept_pinned = 0
    # The same sort at both levels (a config default sets both) orders the routes once, across all
    # of them: sorting each model's routes first would give the same order at twice the cost.
    # Not for `performance`, whose two levels weigh the model's and the route's ranks differently.
    if provider_sort == model_sort and provider_sort != "performance":
        provider_sort = None
    for index, group in enumerate(groups):
        fixed = pinned if index == 0 else 0
        head = [r for r in group[:fixed] if id(r) in keep]
        tail = [r for r in group[fixed:] if id(r) in keep]
        if index == 0:
            kept_pinned = len(head)
        if provider_sort is not None and len(tail) > 1:
            tail.sort(key=lambda route: _key(provider_sort, route, estimate, live, model_level=False))
        ordered = []
        for route in head + tail:
            if (route.provider, route.model) not in seen:
                seen.add((route.provider, route.model))
                ordered.append(route)
        kept_groups.append(ordered)
    fixed_head = kept_groups[0][:kept_pinned]
    rest = [route for group in kept_groups for route in group][len(fixed_head):]
    if model_sort is not None and len(rest) > 1:
        # Across every candidate route; ties keep the order above (provider.sort within a model).
        rest.sort(key=lambda route: _key(model_sort, route, estimate, live, model_level=True))
    if live is not None and config.explore > 0:
        # Routes with no data in the window are explored: now and then one of them goes first, so
        # a new or recovered route gets measured instead of starved behind the measured ones.
        # Where a live sort sets the order: across every route (model.sort), or, when only
        # provider.sort is live, among the requested model's routes (fallback models serve
        # only after those failed). A live provider.sort under a model.sort just breaks its ties.
        if is_live(model_sort):
            scope = len(rest)
        elif model_sort is None and is_live(provider_sort):
            scope = len(kept_groups[0]) - kept_pinned
        else:
            scope = 0
        unmeasured = [i for i in range(scope) if live.requests(rest[i]) is None] if scope > 1 else []
        if unmeasured and random.random() < config.explore:
            rest.insert(0, rest.pop(random.choice(unmeasured)))
    ordered = fixed_head + rest
    if allowed is not None and len(ordered) > 1:
        later = ordered[1:]
        ordered = ordered[:1]
        for names in allowed:
            ordered += [route for route in later if route.provider in names and route not in ordered]
    return ordered


def requested_sort(parsed: CanonicalRequest, config: RoutingConfig) -> str | None:
    """The sort this request is routed by: its `routing.model.sort`, else `routing.provider.sort`,
    else the config's default (None: config order)."""
    routing = parsed.req.routing
    if routing is not None:
        chosen = (routing.model.sort if routing.model else None) or (routing.provider.sort if routing.provider
                                                                     else None)
        if chosen:
            return chosen
    return config.sort


_encode = msgspec.json.encode
AUTO = "auto"
# Output tokens assumed for `sort: cost` when the request sets no max_output_tokens.
DEFAULT_OUTPUT_TOKENS = 1000
_DEFAULT_CONFIG = RoutingConfig()


def _known(sort: str | None) -> str | None:
    """Without measurements, live-metric sorts keep the config order."""
    return sort if sort in ("cost", "performance") else None


class _Live:
    """The live metrics one plan reads: one window, one clock reading."""

    __slots__ = ("interval", "metrics", "now")

    def __init__(self, metrics: RouteMetrics, interval: float, now: float) -> None:
        self.metrics, self.interval, self.now = metrics, interval, now

    def value(self, route: Route, metric: str) -> float | None:
        return self.metrics.value(route.label, metric, self.interval, self.now)

    def requests(self, route: Route) -> float | None:
        """Attempts in the window; None: no data, the route is to be explored."""
        return self.metrics.value(route.label, "total_requests", self.interval, self.now)


class _Estimate:
    """The request's token counts, estimated once and only when asked (characters / 4)."""

    def __init__(self, parsed: CanonicalRequest, live: _Live | None = None) -> None:
        self.parsed = parsed
        self.live = live
        self._input: int | None = None

    @property
    def input_tokens(self) -> int:
        if self._input is None:
            self._input = estimate_usage(self.parsed, [])["input_tokens"]
        return self._input

    def output_tokens(self, route: Route) -> float:
        """`max_output_tokens`, else what the route wrote on average lately, else the default."""
        given = self.parsed.req.max_output_tokens
        if given:
            return given
        recent = self.live.value(route, "output_tokens") if self.live is not None else None
        return recent if recent is not None else DEFAULT_OUTPUT_TOKENS

    def needed(self) -> int:
        return self.input_tokens + (self.parsed.req.max_output_tokens or 0)

    def surely_below(self, tokens: int) -> bool:
        """Whether `needed()` is below `tokens` for certain, without walking the request's texts.

        Every text the estimate counts is in the request's JSON, one byte or more per character,
        so the encoded size bounds it; encoding is C-speed, where the walk copies in Python.
        """
        req = self.parsed.req
        size = len(_encode(self.parsed.items)) + len(req.instructions or "") + (len(_encode(req.tools))
                                                                                if req.tools else 0)
        return tokens_for(size) + (req.max_output_tokens or 0) < tokens


def _key(sort: str, route: Route, estimate: _Estimate, live: _Live | None, *, model_level: bool) -> tuple[Any, ...]:
    if sort == "cost":
        price = route.price
        if price is None:
            return (1, 0.0)
        return (0, estimate.input_tokens * price.input + estimate.output_tokens(route) * price.output)
    if sort != "performance":
        assert live is not None  # live sorts are dropped by `_known` without metrics
        value = live.value(route, sort)
        if value is not None:
            return (0, -value if higher_is_better(sort) else value)
        # No value: no data at all (explored, above), before a route that only failed in the window.
        return (1 if live.requests(route) is None else 2, 0.0)
    first, second = (route.model_rank, route.rank) if model_level else (route.rank, route.model_rank)
    if not model_level and first is None:
        first, second = second, None
    return (first is None, first or 0, second is None, second or 0)


def _provider_fallbacks(provider: ProviderRouting | None, catalog: Catalog) -> list[set[str]] | None:
    if provider is None or not provider.fallbacks:
        return None
    allowed = []
    for i, name in enumerate(provider.fallbacks):
        names = catalog.providers_named(name)
        if not names:
            raise InvalidRequest(f"Unknown provider {name!r}: it is neither a configured provider nor a provider "
                                 "alias matching one.", param=f"routing.provider.fallbacks[{i}]",
                                 code="invalid_value")
        allowed.append(set(names))
    return allowed


def _able(parsed: CanonicalRequest, routes: Sequence[Route], estimate: _Estimate | None, *,
          auto: bool = False) -> Sequence[Route]:
    """The routes that can do what the request needs: capabilities, then the context window."""
    needs = required_capabilities(parsed)
    able = [route for route in routes if route.capabilities.issuperset(needs)] if needs else list(routes)
    if not able:
        first = routes[0] if routes else None
        missing = next((need for need in needs if first is None or need not in first.capabilities), needs[0])
        param, what = _NEEDS[missing]
        if missing == "logprobs" and parsed.req.top_logprobs:
            param = "top_logprobs"
        subject = "any model of the catalog" if auto else f"model '{parsed.req.model}'"
        raise InvalidRequest(f"{what} is not supported by {subject}.", param=param, code="unsupported_parameter")
    windows = [route.context_window for route in able if route.context_window is not None]
    if estimate is None or not windows or estimate.surely_below(min(windows)):
        return able
    needed = estimate.needed()
    fits = [route for route in able if route.context_window is None or route.context_window >= needed]
    if fits:
        return fits
    largest = max(route.context_window or 0 for route in able)
    subject = "any model of the catalog that can serve it" if auto else f"model '{parsed.req.model}'"
    raise InvalidRequest(
        f"This request needs about {needed} tokens (input estimated at 4 characters a token, plus "
        f"max_output_tokens), more than the context window of {subject} (at most {largest} tokens).",
        param="input", code="context_length_exceeded")
