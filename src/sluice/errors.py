"""Errors that reach the client, always in OpenAI's shape.

Every failure the gateway reports is a `GatewayError`: it knows its HTTP status and renders
`{"error": {"message", "type", "param", "code"}}`, the body every OpenAI SDK parses.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from typing import Any

import msgspec

# Statuses that say the request itself is wrong: another route would refuse it too (except a
# context-length error, `CONTEXT_LENGTH_EXCEEDED`, which a route with a larger window may take).
CLIENT_FAULT = frozenset({400, 413, 422})
# Statuses that say the provider will not serve Sluice (its key, its billing, its model): the
# gateway's problem, never passed on to the client as if the client's key or model were wrong.
PROVIDER_FAULT = frozenset({401, 402, 403, 404})
# Statuses worth retrying on the same route after a pause: timeouts, conflicts, rate limits and
# every server error (Anthropic's 529 "overloaded" and proxies' 52x included) but 501, which says
# the upstream will never do this.
RETRYABLE = frozenset({408, 409, 425, 429, *range(500, 600)}) - {501}

# The code of an error that says the request does not fit the model's context window.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    status: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str = "Invalid or missing API key.", **kw: Any) -> None:
        super().__init__(message, code=kw.pop("code", "invalid_api_key"), **kw)


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class ServiceUnavailable(GatewayError):
    """A dependency of the gateway (e.g. the key store) cannot answer right now: 503 with `Retry-After`.

    Clients and SDKs retry a 503 after `Retry-After` seconds; the request itself was fine.
    """

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        headers = {"retry-after": str(max(1, retry_after)), **(kw.pop("headers", None) or {})}
        super().__init__(message, headers=headers, **kw)


class UpstreamError(GatewayError):
    """A provider answered with an error, or could not be reached.

    `retryable` tells routing whether the same route may succeed if asked again (rate limits,
    overload, 5xx and transport failures are; bad requests and auth failures are not);
    `retry_after` is how long the provider asked to wait, in seconds, when it said so.

    Every upstream error, whichever adapter or stream built it, reads its own message here: a
    provider that says the request is longer than the model's context window (each in its own
    words, `is_context_length_error`) becomes a 400 `context_length_exceeded`, which routing
    answers with a larger window instead of giving up; an exhausted quota (`insufficient_quota`,
    a 429 that no wait fixes) is not retryable.
    """

    type = "upstream_error"

    def __init__(self, message: str, *, provider: str, retryable: bool, retry_after: float | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.retryable = retryable
        if retry_after is None and "retry-after" in self.headers:
            retry_after = parse_retry_after(self.headers["retry-after"])
        self.retry_after = retry_after
        if _may_be_context_length(self.status) and is_context_length_error(message, self.code, self.type):
            self.status, self.code, self.type = 400, CONTEXT_LENGTH_EXCEEDED, "invalid_request_error"
        if self.code == CONTEXT_LENGTH_EXCEEDED or self.code in _PROVIDER_FAULT_CODES:
            self.retryable = False

    @property
    def provider_fault(self) -> bool:
        """The provider refuses Sluice itself (credentials, billing, quota, model): not the client's doing."""
        return self.status in PROVIDER_FAULT or self.code in _PROVIDER_FAULT_CODES


# Codes of errors whose status says "retry later" but whose cause no wait fixes: OpenAI answers an
# exhausted balance with 429 `insufficient_quota`, which is the operator's billing, like a 402.
_PROVIDER_FAULT_CODES = frozenset({"insufficient_quota"})

# How providers say "the request does not fit the context window", in their own words. Each
# pattern is specific to a context overflow: an output cap ("max_tokens: 10000 > 4096, which is
# the maximum allowed number of output tokens") or a body-size limit must not match, since a
# larger window would not help them.
_CONTEXT_LENGTH_MESSAGES = re.compile("|".join((
    # OpenAI, vLLM, DeepSeek: "This model's maximum context length is N tokens. However, you
    # requested M ..."; OpenRouter: "This endpoint's maximum context length is N tokens"; Mistral:
    # "Prompt contains N tokens, too large for model with M maximum context length"
    r"maximum context length",
    r"context[ _]length[ _]exceeded",
    r"context window exceeds limit",
    r"prompt is too long",  # Anthropic, also through Bedrock: "prompt is too long: N tokens > M maximum"
    r"input length and `?max_tokens`? exceed context limit",  # Anthropic: "... : N + M > L"
    r"input token count.{0,40} exceeds the maximum number of tokens",  # Gemini: "(N) exceeds ... allowed (M)"
    r"input is too long for (the )?requested model",  # Bedrock ValidationException
    r"too many input tokens",  # Bedrock: "Too many input tokens. Max input tokens: N, request input ..."
    r"input tokens exceeded",  # other servers' wording, as coding agents' overflow tables list it
    r"exceeds? the (available )?context (size|length|window)",  # llama.cpp; Ollama "the input length exceeds ..."
    r"exceeded max(imum)? context length",  # Ollama: "prompt too long; exceeded max context length by N tokens"
    r"longer than the model'?s context length",  # LM Studio / local servers
    r"`inputs` tokens \+ `max_new_tokens` must be <=",  # text-generation-inference (Together, Hugging Face)
    r"reduce the length of the messages",  # Groq, Cerebras: "Please reduce the length of the messages or completion."
)), re.IGNORECASE)
# Codes (or types) that name a context overflow outright.
# (llama.cpp's server says it in its error `type`.)
_CONTEXT_LENGTH_CODES = frozenset({CONTEXT_LENGTH_EXCEEDED, "model_context_window_exceeded",
                                   "exceed_context_size_error"})


def is_context_length_error(message: str | None, code: str | None = None, error_type: str | None = None) -> bool:
    """Whether an upstream error says the request is longer than the model's context window."""
    if code in _CONTEXT_LENGTH_CODES or error_type in _CONTEXT_LENGTH_CODES:
        return True
    return bool(message) and _CONTEXT_LENGTH_MESSAGES.search(message) is not None  # type: ignore[arg-type]


def _may_be_context_length(status: int) -> bool:
    # A context overflow comes as a client error, as a 5xx from local servers that report every
    # failure that way, or with no error status of its own (inside a 200); an auth, not-found or
    # rate-limit answer is about something else whatever its text says ("Request too large for
    # gpt-4o on tokens per min" is a 429 rate limit).
    return status in CLIENT_FAULT or status >= 500 or status < 400


# The longest `Retry-After` taken as given: a day. A provider (or anything in between) may send
# "1e999", "nan" or a date in the year 9999; none of those may become a cooldown that never ends
# or a header that cannot be written.
MAX_RETRY_AFTER = 86_400.0


def parse_retry_after(value: str) -> float | None:
    """A `Retry-After` header (seconds, or an HTTP date) as seconds from now, within 0..`MAX_RETRY_AFTER`."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# In-stream error codes (a Responses `error` event carries a code, not a status) -> HTTP status.
# Also the codes adapters put in the error events they translate: Anthropic's (`billing_error`,
# `request_too_large`, `overloaded`) and Google's canonical statuses, lower-cased.
_CODE_STATUS = {
    "rate_limit_exceeded": 429, "insufficient_quota": 429, "rate_limit_error": 429,
    "context_length_exceeded": 400, "invalid_prompt": 400, "invalid_request_error": 400, "invalid_value": 400,
    "invalid_image": 400, "invalid_image_format": 400, "invalid_base64_image": 400, "invalid_image_url": 400,
    "image_too_large": 400, "image_too_small": 400, "empty_image_file": 400, "unsupported_image_media_type": 400,
    "authentication_error": 401, "invalid_api_key": 401, "permission_error": 403, "not_found_error": 404,
    "model_not_found": 404, "overloaded": 503, "overloaded_error": 503, "server_error": 500,
    "timeout": 504, "vector_store_timeout": 504, "billing_error": 402, "request_too_large": 413,
    "invalid_argument": 400, "failed_precondition": 400, "out_of_range": 400, "unauthenticated": 401,
    "permission_denied": 403, "not_found": 404, "resource_exhausted": 429, "aborted": 409, "internal": 500,
    "unavailable": 503, "deadline_exceeded": 504,
}
# Words that say "busy, come back later" in an error whose code names no status.
_OVERLOADED = re.compile(r"overloaded|server (is )?busy|try again later|temporarily unavailable", re.IGNORECASE)
_EXHAUSTED = re.compile(r"resource[ _]exhausted|rate limit", re.IGNORECASE)


def status_for_code(code: str | None, message: str | None = None) -> int:
    """The HTTP status an upstream would have sent for an error it reported inside a stream.

    A code Sluice does not know (or none: OpenAI-compatible servers often send a bare message)
    is a 502, unless the message says the upstream is busy (503) or out of capacity (429):
    both are worth a retry, and a 429 counts toward "every route was rate limited".
    """
    status = _CODE_STATUS.get(code or "")
    if status is not None:
        return status
    if message:
        if _EXHAUSTED.search(message):
            return 429
        if _OVERLOADED.search(message):
            return 503
    return 502


class NoRouteSucceeded(GatewayError):
    """Every candidate route failed: 424, carrying the last upstream error's message."""

    status = 424
    type = "upstream_error"


class RateLimited(GatewayError):
    """Every candidate route was rate limited: 429, with the soonest `Retry-After` any of them gave.

    The client may come back then; SDKs retry a 429 on their own, honouring the header.
    """

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        if retry_after is not None and math.isfinite(retry_after):
            # Whole seconds, rounded up: coming back a fraction early would only meet the limit again.
            headers["retry-after"] = str(max(0, math.ceil(retry_after)))
        super().__init__(message, headers=headers, **kw)


def status_error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status, for upstreams that don't send one."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "server_error"
