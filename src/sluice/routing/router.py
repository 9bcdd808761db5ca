"""Which routes may serve a request, in the order to try them.

Today: the model's routes (a pinned provider first), then those of `routing.model.fallbacks`,
keeping only routes whose declared capabilities cover what the request uses. Live-metric sorting,
cooldowns and retries plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.canonical.request import CanonicalRequest
from sluice.errors import GatewayError, InvalidRequest
from sluice.routing.catalog import Catalog, Route

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


def plan(parsed: CanonicalRequest, catalog: Catalog) -> Sequence[Route]:
    """Candidate routes in order; raises `NotFound` / `InvalidRequest` when there are none."""
    unique = catalog.resolve(parsed.req.model)
    routing = parsed.req.routing
    if routing is not None and routing.model is not None and routing.model.fallbacks:
        routes = list(unique)
        for i, fallback in enumerate(routing.model.fallbacks):
            try:
                routes += catalog.resolve(fallback)
            except GatewayError as exc:
                exc.param = f"routing.model.fallbacks[{i}]"
                raise
        seen: set[tuple[str, str]] = set()
        unique = []
        for route in routes:
            key = (route.provider, route.model)
            if key not in seen:
                seen.add(key)
                unique.append(route)
    needs = required_capabilities(parsed)
    if not needs:
        return unique
    able = [route for route in unique if route.capabilities.issuperset(needs)]
    if able:
        return able
    missing = next(need for need in needs if need not in unique[0].capabilities)
    param, what = _NEEDS[missing]
    if missing == "logprobs" and parsed.req.top_logprobs:
        param = "top_logprobs"
    raise InvalidRequest(f"{what} is not supported by model '{parsed.req.model}'.", param=param,
                         code="unsupported_parameter")
