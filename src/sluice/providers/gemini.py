"""Google Gemini upstream (`type: gemini`): `models/{model}:generateContent` and `:streamGenerateContent`.

`GeminiAdapter` builds the URL (a `base_url` that already names an API version is kept), checks
what Gemini cannot carry, sends the request through the shared upstream client and turns Google's
`{"error": {code, message, status, details}}` into OpenAI-shaped errors. Translation lives in
`gemini_request` (request body) and `gemini_response` (`GeminiTranslator`, shared by the
non-streaming and the streaming path); JSON Schema -> OpenAPI rewriting in `gemini_schema`.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluice.canonical.request import CanonicalRequest
from sluice.config import ProviderConfig
from sluice.errors import UpstreamError, status_error_type
from sluice.providers.base import RETRYABLE, Adapter, Event, unsupported
from sluice.providers.gemini_request import build_body
from sluice.providers.gemini_response import GeminiTranslator
from sluice.providers.transport import NetworkError, UpstreamClient, UpstreamResponse

__all__ = ["GeminiAdapter", "GeminiTranslator"]  # the translator is re-exported for callers of this module

_encode = msgspec.json.encode
_decode = msgspec.json.decode

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
_ALLOWED_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning", "web_search_call",
                            "code_interpreter_call"})
_VERSION_SEGMENT = re.compile(r"/v\d+(?:alpha|beta)?\d*(?:/|$)")


class GeminiAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        options = self.config.options
        base = (self.config.base_url or DEFAULT_BASE_URL).rstrip("/")
        # A base_url that already names a version (`.../v1beta`, Vertex's `.../v1/publishers/google`) is kept.
        self.prefix = base if _VERSION_SEGMENT.search(base) else f"{base}/{options.get('api_version') or 'v1beta'}"
        self._headers = {"content-type": "application/json", **self.config.headers}
        if self.config.api_key:
            self._headers["x-goog-api-key"] = self.config.api_key

    def url(self, model: str, stream: bool) -> str:
        path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"{self.prefix}/{path}:{'streamGenerateContent?alt=sse' if stream else 'generateContent'}"

    # --- request -----------------------------------------------------------------------------

    def carries(self, tool: dict[str, Any]) -> bool:
        kind = tool["type"]
        if kind == "code_interpreter":
            return True
        # Google Search always fetches live results: a client that allows no external access
        # (cached search only, as Codex asks by default) gets no search rather than more.
        return kind.startswith("web_search") and tool.get("external_web_access") is not False

    def check(self, parsed: CanonicalRequest, model: str) -> None:
        parsed = self.tools(parsed).request  # namespace / custom tools flattened, unsupported hosted ones dropped
        for i, tool in enumerate(parsed.req.tools or ()):
            kind = tool.get("type")
            if kind == "function" or kind == "code_interpreter":
                continue
            if isinstance(kind, str) and kind.startswith("web_search"):
                filters = tool.get("filters") or {}
                if filters.get("allowed_domains"):
                    raise unsupported(f"tools[{i}].filters.allowed_domains", "Restricting web search to domains",
                                      self.name)
                continue
            raise unsupported(f"tools[{i}].type", f"The '{kind}' tool", self.name)
        choice = parsed.req.tool_choice
        if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
            raise unsupported("tool_choice", f"tool_choice of type '{choice.get('type')}'", self.name)
        for i, item in enumerate(parsed.items):
            kind = item["type"]
            if kind not in _ALLOWED_ITEMS:
                raise unsupported(f"input[{i}]", f"An input item of type '{kind}'", self.name)
            if kind == "message" and item["role"] in ("system", "developer"):
                for j, part in enumerate(item["content"]):
                    if part.get("type") not in ("input_text", "output_text"):
                        raise unsupported(f"input[{i}].content[{j}]", "Non-text content in a system message",
                                          self.name)

    def body(self, parsed: CanonicalRequest, model: str) -> bytes:
        return self._body(self.tools(parsed).request, model)

    def _body(self, parsed: CanonicalRequest, model: str) -> bytes:
        """The body of a request whose tools are flattened already (`self.tools`)."""
        return _encode(build_body(parsed, model, self.name, self.config.options, self.prefix))

    # --- non-streaming -----------------------------------------------------------------------

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        flat = self.tools(parsed)
        parsed = flat.request
        data = await self.post_json(self.url(model, False), self._body(parsed, model), self._headers)
        self._check_answer(data)
        translator = GeminiTranslator(parsed, model, flat.tools)
        # A JSON array is the non-SSE stream shape; some proxies answer generateContent with it.
        for chunk in data if isinstance(data, list) else (data,):
            if isinstance(chunk, dict):
                translator.feed(chunk)
        events = translator.finish(cut_short_ok=True)
        if not events or events[-1]["type"] == "error":
            detail = events[-1]["message"] if events else "Gemini answered without a candidate."
            raise UpstreamError(f"{self.name}: {detail}", provider=self.name, retryable=True, status=502,
                                code="upstream_error")
        return events[-1]["response"]

    # --- streaming ---------------------------------------------------------------------------

    async def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        flat = self.tools(parsed)
        parsed = flat.request
        resp = await self.post_stream(self.url(model, True), self._body(parsed, model), self._headers)
        try:
            translator = GeminiTranslator(parsed, model, flat.tools)
            if "event-stream" not in resp.headers.get("content-type", "text/event-stream"):
                # Without alt=sse (a proxy that drops the query) Gemini streams one JSON array.
                yield await self._json_array(resp, translator)
                return
            # An error chunk before the first candidate (a 200 stream whose first chunk is
            # `{"error": ...}`) is raised with the status its own code names, so routing can act on
            # it like on an HTTP error.
            started = False

            def translate(blocks: list[tuple[str | None, bytes]], batch: list[Event]) -> None:
                nonlocal started
                for _, data in blocks:
                    events = translator.feed_bytes(data)
                    if not started:
                        if translator.error is not None:
                            raise self._early_error(data)
                        if not (events or translator.answered):
                            continue  # usage / prompt feedback only: nothing to show yet
                        started = True
                    batch += events
                    if translator.error is not None:
                        break
                return

            async for batch in self.sse_batches(resp, translate, lambda: translator.error is not None):
                yield batch
            tail = translator.finish()  # e.g. a blocked prompt: no candidate, a refusal
            if tail:
                yield tail
        except NetworkError as exc:
            raise self.transport_error(exc) from None
        finally:
            await resp.aclose()

    async def _json_array(self, resp: UpstreamResponse, translator: GeminiTranslator) -> list[Event]:
        try:
            data = _decode(await resp.read())
        except msgspec.DecodeError:
            raise self.invalid_response() from None
        self._check_answer(data)
        events: list[Event] = []
        for chunk in data if isinstance(data, list) else (data,):
            if isinstance(chunk, dict):
                events += translator.feed(chunk)
        return events + translator.finish()

    # --- errors ------------------------------------------------------------------------------

    def _check_answer(self, data: Any) -> None:
        """Raise the error a 200 answer carries instead of candidates (first in a JSON-array stream)."""
        first = data[0] if isinstance(data, list) and data else data
        if isinstance(first, dict) and first.get("error") and not first.get("candidates"):
            raise self.error_from_body(200, _encode(first))

    def _early_error(self, data: bytes) -> UpstreamError:
        """A stream's error chunk (or unreadable chunk) before any candidate: this route failed."""
        try:
            _decode(data)
        except msgspec.DecodeError:
            return self.invalid_response()
        return self.error_from_body(200, data)  # the status comes from the chunk's own error.code

    def error_from_body(self, status: int, body: bytes, retry_after: str | None = None) -> UpstreamError:
        """Google's `{"error": {code, message, status, details}}` -> an OpenAI-shaped error."""
        try:
            data = _decode(body)
        except msgspec.DecodeError:
            data = None
        if isinstance(data, list) and data:
            data = data[0]  # the non-SSE stream wraps errors in an array
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            # An error in a 200 body without Google's shape: a failed answer, not a success.
            return super().error_from_body(status if status >= 400 else 502, body, retry_after)
        google_status = err.get("status") if isinstance(err.get("status"), str) else None
        if status < 400:  # an error inside a 200 body: its own code says the status
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            status = _GOOGLE_STATUS.get(google_status or "", status) if status == 502 else status
        details = [d for d in err.get("details") or () if isinstance(d, dict)]
        if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in details):
            status = 401  # the provider's key, not the client's request: let routing try another route
        if status == 429 and not retry_after:
            retry_after = _retry_delay(details)
        message = err.get("message") or f"HTTP {status}"
        return UpstreamError(
            f"{self.name}: {self.redact_secrets(str(message))}",
            provider=self.name,
            retryable=status in RETRYABLE,
            status=status,
            type=status_error_type(status),
            code=google_status.lower() if google_status else None,
            headers={"retry-after": retry_after} if retry_after and status == 429 else None,
        )


def _retry_delay(details: list[dict[str, Any]]) -> str | None:
    """`RetryInfo.retryDelay` ("34.4s") -> a Retry-After value in whole seconds ("35")."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, math.ceil(float(delay[:-1]))))
            except (ValueError, OverflowError):  # "1e999s": no usable wait
                return None
    return None

