"""What every adapter implements, and the HTTP plumbing they share."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import msgspec
from yarl import URL

from sluice.canonical.request import CanonicalRequest
from sluice.canonical.tools import Flattened, flatten, hosted_tools_not_carried
from sluice.config import ProviderConfig
from sluice.errors import (
    CLIENT_FAULT,
    RETRYABLE,
    InvalidRequest,
    UpstreamError,
    parse_retry_after,
    status_error_type,
)
from sluice.providers.sse import SSEDecoder
from sluice.providers.transport import (
    NetworkError,
    ResponseTooLarge,
    UpstreamClient,
    UpstreamResponse,
    UpstreamTimeout,
    describe_network_error,
)

Event = dict[str, Any]

# Whether the running attempt has sent its request upstream yet. An exception before that is
# Sluice's own failure while building the request, not the provider's: the attempt loop reports
# it as a server error instead of blaming the route and failing over.
UPSTREAM_CALLED: ContextVar[bool] = ContextVar("upstream_called", default=False)

__all__ = ["CLIENT_FAULT", "RETRYABLE", "UPSTREAM_CALLED", "Adapter", "Event", "unsupported"]

_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|AKIA[0-9A-Z]{16})")


class Adapter:
    """Translates canonical requests to one wire protocol and its answers back.

    `create` returns the result part of a Response (`status`, `output`, `usage`,
    `incomplete_details`, ...); `stream` yields lists of Responses stream events (without
    `sequence_number`), one list per upstream read, starting only once the upstream accepted the
    request, so a failure to start raises `UpstreamError` before anything reaches the client.
    """

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        self.name = name
        self.config = config
        self.client = client or UpstreamClient(config)
        self._redactor: tuple[tuple[str, ...], re.Pattern[str] | None] | None = None

    async def close(self) -> None:
        await self.client.close()

    def check(self, parsed: CanonicalRequest, model: str) -> None:
        """Raise `InvalidRequest` for what this wire protocol cannot carry."""

    # --- tools this protocol lacks (canonical/tools.py) ------------------------------------------

    # Hosted tool types the protocol maps to the provider's own equivalent; `carries` may look
    # closer at a tool's settings. Every other hosted tool is dropped or refused (config
    # `unsupported_tools`).
    hosted_tools: frozenset[str] = frozenset()
    # Namespaces and custom tools are flattened into function tools unless the protocol has them.
    flattens_tools = True
    native_custom_tools = False

    def carries(self, tool: dict[str, Any]) -> bool:
        """Whether this protocol can send this hosted tool (its own equivalent of it)."""
        return tool["type"] in self.hosted_tools

    def tools(self, parsed: CanonicalRequest) -> Flattened:
        """The request with only the tools this protocol carries, and the map that restores calls."""
        if not self.flattens_tools:
            return Flattened(parsed)
        return flatten(parsed, carries=self.carries, native_custom=self.native_custom_tools,
                       refuse=self.config.unsupported_tools == "refuse", provider=self.name)

    def dropped_tools(self, parsed: CanonicalRequest) -> list[str]:
        """The hosted tool types this protocol leaves out of the request (none when it refuses them)."""
        if not self.flattens_tools or self.config.unsupported_tools == "refuse":
            return []
        return hosted_tools_not_carried(parsed, self.carries)

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        raise NotImplementedError

    # --- shared plumbing ---------------------------------------------------------------------

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
        """POST `body` and return the decoded JSON answer; any failure raises `UpstreamError`."""
        resp = await self.post_stream(url, body, headers)
        try:
            payload = await resp.read()
        except NetworkError as exc:
            raise self.transport_error(exc) from None
        finally:
            await resp.aclose()
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError:
            raise self.invalid_response() from None

    async def post_stream(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST `body` and return the accepted (2xx) response, still open: the caller closes it.

        A failure to connect or a non-2xx answer raises `UpstreamError` (the response closed).
        """
        UPSTREAM_CALLED.set(True)
        try:
            resp = await self.client.post(url, body, headers)
        except NetworkError as exc:
            raise self.transport_error(exc) from None
        if resp.status >= 300:
            try:
                if resp.status < 400:
                    raise self.redirect_error(resp.status, resp.headers.get("location"))
                raise await self.error_from_response(resp)
            finally:
                await resp.aclose()
        return resp

    async def sse_batches(
        self,
        resp: UpstreamResponse,
        translate: Translate,
        finished: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[list[Event]]:
        """An SSE body as batches of Responses events, one per read.

        `translate(blocks, batch)` appends the events of one read's `(event, data)` blocks to
        `batch`; `finished` stops reading early (after `[DONE]`, `message_stop`, an error chunk).
        When `translate` raises (a block it cannot read), what it appended from the read's
        earlier blocks still goes out before the error: text that arrived in the same read as
        a broken event is the client's. A broken connection raises `UpstreamError`.
        """
        decoder = SSEDecoder(self.config.max_event_bytes)
        try:
            async for chunk in resp.chunks():
                batch, error = _translated(translate, decoder.feed(chunk))
                if batch:
                    yield batch
                if error is not None:
                    raise error
                if finished():
                    return
            batch, error = _translated(translate, decoder.flush())
            if batch:
                yield batch
            if error is not None:
                raise error
        except NetworkError as exc:
            if isinstance(exc, ResponseTooLarge):
                resp.abandon()  # the rest of an oversized stream is not worth reading
            raise self.transport_error(exc) from None

    def invalid_response(self) -> UpstreamError:
        """The upstream accepted the request but its answer is not JSON."""
        return UpstreamError(f"{self.name}: upstream sent invalid JSON", provider=self.name, retryable=True,
                             status=502, code="upstream_invalid_response")

    def redirect_error(self, status: int, location: str | None) -> UpstreamError:
        """A 3xx answer: never followed, this route's failure.

        Following it would send this provider's credentials (`x-api-key`, `x-goog-api-key`, secret
        headers) and, on 307/308, the user's prompt to whatever origin the upstream names, and take
        that origin's answer for the provider's. The message names the target's origin only: a
        Location's path and query may carry secrets.
        """
        target = ""
        try:
            url = URL(location or "")
            if url.is_absolute() and url.host:
                target = f" to {url.origin()}"
        except (TypeError, ValueError):
            pass
        return UpstreamError(
            self.redact_secrets(f"{self.name}: the upstream answered with a redirect (HTTP {status}){target}; "
                                "Sluice does not follow upstream redirects: set the provider's base_url to "
                                "the address that answers."),
            provider=self.name, retryable=False, status=502, code="upstream_redirect")

    def secrets(self) -> list[str]:
        """Every credential this adapter sends upstream (subclasses add what they derive)."""
        config = self.config
        found = [config.api_key, config.aws_access_key_id, config.aws_secret_access_key, config.aws_session_token,
                 *config.headers.values()]
        # Header values such as "Bearer xyz": the token alone must go too.
        found += [value.partition(" ")[2].strip() for value in config.headers.values() if " " in value.strip()]
        # Whatever its length: a short secret is still a secret (the price is some "[redacted]" in text).
        return [secret for secret in found if secret]

    def redact_secrets(self, text: str) -> str:
        """Never let a provider credential travel back in an error message or a log line."""
        pattern = self._secret_pattern()
        if pattern is not None:
            text = pattern.sub("[redacted]", text)
        return _KEYLIKE.sub("[redacted]", text)

    def _secret_pattern(self) -> re.Pattern[str] | None:
        """One alternation of every secret (and its URL-encoded form), longest first.

        One pass, longest first: a secret that is part of a longer one cannot leave the longer one's
        remainder readable, and a short secret (even one character) cannot rewrite the
        "[redacted]" markers already put in. Compiled once per set of secrets (errors are rare,
        but a retry storm should not recompile it every time).
        """
        found = set(self.secrets())
        found.update(quote(secret, safe="") for secret in list(found))  # as echoed in a URL
        secrets = tuple(sorted(found, key=lambda s: (-len(s), s)))
        cached = self._redactor
        if cached is None or cached[0] != secrets:
            pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None
            self._redactor = cached = (secrets, pattern)
        return cached[1]

    def transport_error(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, ResponseTooLarge):
            # Retrying would read the same oversized answer again: fail this route, try the next.
            return UpstreamError(f"{self.name}: {exc}; Sluice stopped reading it", provider=self.name,
                                 retryable=False, status=502, code="upstream_response_too_large")
        if isinstance(exc, UpstreamTimeout):
            # The route's failure: another route (or this one again) may answer in time.
            return UpstreamError(f"provider '{self.name}': {exc}", provider=self.name, retryable=True,
                                 status=504, code="upstream_timeout")
        detail = self.redact_secrets(describe_network_error(exc))
        # Raised for a refused connection and for one that breaks mid-answer alike.
        return UpstreamError(f"The connection to provider '{self.name}' failed: {detail}", provider=self.name,
                             retryable=True, status=502, code="upstream_connection_error")

    async def error_from_response(self, resp: UpstreamResponse) -> UpstreamError:
        """Turn a non-2xx upstream answer into an OpenAI-shaped `UpstreamError`."""
        try:
            body = await resp.read_prefix()  # a message fits; a 200 MB error body is not read
        except NetworkError:
            body = b""
        return self.error_from_body(resp.status, body, resp.headers.get("retry-after"))

    def error_from_body(self, status: int, body: bytes, retry_after: str | None = None) -> UpstreamError:
        message, etype, code, param = self.parse_error_body(body)
        if not message:
            message = f"HTTP {status}"
        headers = {"retry-after": retry_after} if retry_after and status == 429 else None
        return UpstreamError(
            f"{self.name}: {self.redact_secrets(message)}",
            provider=self.name,
            retryable=status in RETRYABLE,
            retry_after=parse_retry_after(retry_after) if retry_after else None,
            status=status,
            type=etype or status_error_type(status),
            code=code,
            param=param,
            headers=headers,
        )

    @staticmethod
    def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
        """(message, type, code, param) from the common error body shapes."""
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            text = body.decode(errors="replace").strip()
            return (text[:500] or None), None, None, None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]  # Gemini sometimes wraps the error in a list
        if not isinstance(data, dict):
            return str(data)[:500], None, None, None
        err = data.get("error", data)
        if isinstance(err, str):
            return err, data.get("type"), None, None
        if not isinstance(err, dict):
            return str(err)[:500], None, None, None
        code = err.get("code")
        etype = err.get("type") or err.get("status")
        message = err.get("message") or data.get("message")
        return (
            message if isinstance(message, str) or message is None else str(message)[:500],
            etype if isinstance(etype, str) else None,
            str(code) if code is not None else None,
            err.get("param") if isinstance(err.get("param"), str) else None,
        )


Translate = Callable[[list[tuple[str | None, bytes]], list[Event]], None]


def _translated(translate: Translate, blocks: list[tuple[str | None, bytes]]) -> tuple[list[Event], Exception | None]:
    """The events `translate` made of a read's blocks, and the error it stopped on, if any."""
    batch: list[Event] = []
    try:
        translate(blocks, batch)
    except Exception as exc:
        return batch, exc
    return batch, None


def unsupported(param: str, what: str, provider: str) -> InvalidRequest:
    return InvalidRequest(f"{what} is not supported by provider '{provider}'.", param=param,
                          code="unsupported_parameter")



ERROR_PREFIX = "Error: "


def failed_tool_output(output: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A `function_call_output` with `is_error: true`, for a protocol that has no error flag.

    The failure is said in the text the model reads: "Error: " before the output (a string, or the
    first text part of a part list; a list without one gets an `input_text` part "Error:" first),
    unless the text already starts with "Error:". An empty output becomes "Error".
    """
    if isinstance(output, str):
        return _error_text(output)
    parts = list(output)
    first = parts[0] if parts else None
    if isinstance(first, dict) and first.get("type") in ("input_text", "output_text") \
            and isinstance(first.get("text"), str):
        parts[0] = {**first, "text": _error_text(first["text"])}
    else:
        parts.insert(0, {"type": "input_text", "text": ERROR_PREFIX.rstrip()})
    return parts


def _error_text(text: str) -> str:
    if not text.strip():
        return ERROR_PREFIX.rstrip(": ")
    if text.lstrip()[:6].lower() == "error:":
        return text
    return ERROR_PREFIX + text
