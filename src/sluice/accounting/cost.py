"""Cost of a response from its normalized usage and the route's price (USD per 1M tokens)."""

from __future__ import annotations

from typing import Any

from sluice.config import Price


def response_cost(usage: dict[str, Any], price: Price | None) -> float | None:
    """USD; None when the route has no price (an ad-hoc `provider/model` route).

    Cached reads are billed at `cached_input` and cache writes at `cache_write`, each falling back
    to the input price; `input_tokens` includes both, so they are taken out of the full-price part.
    The writes made for an hour (`cache_write_1h_tokens`, part of `cached_tokens_created`) are
    billed at `cache_write_1h`, falling back to the `cache_write` price.
    """
    if price is None:
        return None
    details = usage["input_tokens_details"]
    cached = details["cached_tokens"]
    created = details["cached_tokens_created"]
    hour = min(details.get("cache_write_1h_tokens") or 0, created)
    uncached = max(usage["input_tokens"] - cached - created, 0)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    write_price = price.cache_write if price.cache_write is not None else price.input
    hour_price = price.cache_write_1h if price.cache_write_1h is not None else write_price
    total = (
        uncached * price.input
        + cached * cached_price
        + (created - hour) * write_price
        + hour * hour_price
        + usage["output_tokens"] * price.output
    )
    return round(total / 1_000_000, 10)
