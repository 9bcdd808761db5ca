"""AWS Bedrock upstream (`type: bedrock`): the Converse and ConverseStream APIs.

`POST {endpoint}/model/{modelId}/converse` answers JSON; `/converse-stream` answers an AWS binary
eventstream. Requests are signed with SigV4 by botocore (`SigV4Auth` over exactly the bytes and
the percent-encoded path that are sent), or carry a Bedrock API key as a bearer token; frames are
parsed by botocore's `EventStreamBuffer`. The HTTP call itself goes through the shared upstream
client like every other adapter. Translation lives in `bedrock_request` / `bedrock_response`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.eventstream import EventStreamBuffer, ParserError
from botocore.exceptions import BotoCoreError
from botocore.session import Session
from botocore.utils import percent_encode

from sluice.canonical.request import CanonicalRequest
from sluice.config import ProviderConfig
from sluice.errors import UpstreamError, status_error_type
from sluice.providers.base import RETRYABLE, Adapter, Event, unsupported
from sluice.providers.bedrock_request import Plan, build_body, check_part
from sluice.providers.bedrock_response import (
    AWS_ERRORS,
    MALFORMED,
    ConverseTranslator,
    event_code,
    stream_exception,
    usage,
)
from sluice.providers.transport import NetworkError, ResponseTooLarge, UpstreamClient, UpstreamResponse

_encode = msgspec.json.encode
_decode = msgspec.json.decode

SIGNING_NAME = "bedrock"  # service-2.json metadata.signingName


class BedrockAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        self.region = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        # A Bedrock API key (bearer token) replaces SigV4: the config's api_key first, then the
        # environment, unless the config names SigV4 keys of its own.
        self.bearer = config.api_key or (
            None if config.aws_access_key_id else os.environ.get("AWS_BEARER_TOKEN_BEDROCK"))
        self._static = (ReadOnlyCredentials(config.aws_access_key_id, config.aws_secret_access_key,
                                            config.aws_session_token)
                        if config.aws_access_key_id and config.aws_secret_access_key else None)
        self._source: Any = None  # botocore credentials from the default chain (env, profile, SSO, IMDS...)
        self._frozen: ReadOnlyCredentials | None = self._static
        self._resolved = False
        self._lock = asyncio.Lock()
        self._urls: dict[str, tuple[str, str]] = {}
        self._headers = {"Content-Type": "application/json", **config.headers}

    # --- request -----------------------------------------------------------------------------

    def check(self, parsed: CanonicalRequest, model: str) -> None:
        parsed = self.tools(parsed).request  # namespace / custom tools flattened, hosted ones dropped
        req = parsed.req
        for i, tool in enumerate(req.tools or ()):
            if tool.get("type") != "function":
                raise unsupported(f"tools[{i}].type", f"The '{tool.get('type')}' tool", self.name)
        choice = req.tool_choice
        if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
            raise unsupported("tool_choice", f"tool_choice of type '{choice.get('type')}'", self.name)
        if req.top_logprobs:
            raise unsupported("top_logprobs", "Logprobs", self.name)
        if parsed.wants("message.output_text.logprobs"):
            raise unsupported("include", "Logprobs", self.name)
        for i, item in enumerate(parsed.items):
            kind = item["type"]
            if kind == "item_reference":
                raise unsupported(f"input[{i}]", "An item_reference input", self.name)
            if kind == "message":
                parts, where = item["content"], f"input[{i}].content"
            elif kind == "function_call_output" and isinstance(item["output"], list):
                parts, where = item["output"], f"input[{i}].output"
            else:
                continue
            for j, part in enumerate(parts):
                if isinstance(part, dict) and part.get("type") in ("input_image", "input_file"):
                    check_part(part, f"{where}[{j}]")

    def body(self, parsed: CanonicalRequest, model: str) -> tuple[dict[str, Any], Plan]:
        """The Converse request body and what reading its answer needs."""
        flat = self.tools(parsed)
        body, plan = build_body(flat.request, model, self.config.options)
        plan.tools = flat.tools
        return body, plan

    def secrets(self) -> list[str]:
        return [*super().secrets(), *([self.bearer] if self.bearer else [])]

    def url(self, model: str, stream: bool) -> str:
        urls = self._urls.get(model)
        if urls is None:
            base = (self.config.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com").rstrip("/")
            # The modelId is one path segment: ':' and '/' (ARNs) percent-encoded, as botocore does.
            prefix = f"{base}/model/{percent_encode(model)}/"
            urls = (prefix + "converse", prefix + "converse-stream")
            if len(self._urls) < 1024:  # clients can name any model id: keep the cache bounded
                self._urls[model] = urls
        return urls[stream]

    async def signed_headers(self, url: str, payload: bytes) -> dict[str, str]:
        """Headers for one request: a bearer token, or a SigV4 signature over `url` and `payload`."""
        if self.bearer:
            return {**self._headers, "Authorization": f"Bearer {self.bearer}"}
        credentials = await self.credentials()
        request = AWSRequest(method="POST", url=url, data=payload, headers=self._headers)
        SigV4Auth(credentials, SIGNING_NAME, self.region).add_auth(request)
        return dict(request.headers.items())

    async def _prepare(self, parsed: CanonicalRequest, model: str, stream: bool
                       ) -> tuple[str, bytes, dict[str, str], Plan]:
        if not self._resolved and (self.region is None or (self._static is None and not self.bearer)):
            await self._resolve()
        if self.region is None and (not self.bearer or not self.config.base_url):
            raise self._misconfigured("no AWS region (config region, AWS_REGION or AWS_DEFAULT_REGION)")
        body, plan = self.body(parsed, model)
        payload = _encode(body)
        url = self.url(model, stream)
        headers = await self.signed_headers(url, payload)
        # The path goes out byte for byte as signed: the client does not re-quote %3A.
        return url, payload, headers, plan

    # --- credentials -------------------------------------------------------------------------

    async def credentials(self) -> ReadOnlyCredentials:
        """Frozen SigV4 credentials; resolving or refreshing them runs off the event loop."""
        frozen = self._frozen
        if frozen is not None and not self._refresh_needed():
            return frozen
        async with self._lock:
            if self._frozen is None or self._refresh_needed():
                self._frozen = await asyncio.to_thread(self._freeze)
            return self._frozen

    def _refresh_needed(self) -> bool:
        check = getattr(self._source, "refresh_needed", None)
        return bool(check is not None and check())

    async def _resolve(self) -> None:
        async with self._lock:
            if not self._resolved:
                await asyncio.to_thread(self._load_chain)
                self._resolved = True

    def _load_chain(self) -> None:
        # botocore's Session is slow to build (milliseconds) and its chain may read files or call
        # IMDS/STS, so it is built once per adapter, in a worker thread.
        try:
            session = Session(profile=self.config.options.get("profile"))
            if self.region is None:
                self.region = session.get_config_variable("region")
            if self._static is None and not self.bearer:
                self._source = session.get_credentials()
        except BotoCoreError as exc:
            raise self._misconfigured(f"could not load AWS configuration: {exc}") from None

    def _freeze(self) -> ReadOnlyCredentials:
        if self._source is None:
            raise self._misconfigured("no AWS credentials found (config aws_access_key_id/aws_secret_access_key, "
                                      "AWS_* environment variables, a profile, or AWS_BEARER_TOKEN_BEDROCK)")
        try:
            return self._source.get_frozen_credentials()
        except BotoCoreError as exc:
            raise self._misconfigured(f"could not refresh AWS credentials: {exc}") from None

    def _misconfigured(self, detail: str) -> UpstreamError:
        return UpstreamError(f"Provider '{self.name}': {self.redact_secrets(detail)}", provider=self.name,
                             retryable=False, status=500, code="provider_misconfigured")

    # --- non-streaming -----------------------------------------------------------------------

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        url, payload, headers, plan = await self._prepare(parsed, model, False)
        return self.from_converse(await self.post_json(url, payload, headers), plan)

    def from_converse(self, data: dict[str, Any], plan: Plan) -> dict[str, Any]:
        """A Converse response -> the result part of a Response."""
        stop = data.get("stopReason") or "end_turn"
        if stop in MALFORMED:
            raise UpstreamError(f"{self.name}: the model stopped with '{stop}'", provider=self.name, retryable=True,
                                status=502, code=stop)
        translator = ConverseTranslator(plan)
        message = (data.get("output") or {}).get("message") or {}
        translator.message(message.get("content") or [])
        translator.stop_reason = stop
        translator.usage = usage(data.get("usage"))
        return translator.finish()[-1]["response"]

    # --- streaming ---------------------------------------------------------------------------

    async def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        url, payload, headers, plan = await self._prepare(parsed, model, True)
        resp = await self.post_stream(url, payload, headers)
        try:
            translator = ConverseTranslator(plan)
            started = False  # Responses events wait for the first content, so an early exception can fail over
            frames = EventStreamBuffer()
            # Bytes of a frame not complete yet: capped like an SSE event (botocore would buffer
            # up to its own 24 MiB payload limit, re-copying the buffer on every chunk).
            pending, limit = 0, self.config.max_event_bytes
            async for chunk in resp.chunks():
                frames.add_data(chunk)
                pending += len(chunk)
                batch: list[Event] = []
                try:
                    for frame in frames:
                        pending -= frame.prelude.total_length
                        headers_in = frame.headers
                        if headers_in.get(":message-type") == "event":
                            events = translator.feed(headers_in.get(":event-type") or "",
                                                     _decode(frame.payload) if frame.payload else {})
                            if events:
                                started = True
                                batch += events
                            continue
                        code, message, status = _frame_error(headers_in, frame.payload)
                        if not started:
                            raise UpstreamError(f"{self.name}: {self.redact_secrets(message)}",
                                                provider=self.name, retryable=status in RETRYABLE, status=status,
                                                code=code)
                        translator.error = (event_code(status), self.redact_secrets(message))
                        break
                except (ParserError, msgspec.DecodeError):
                    if batch:  # what arrived before the unreadable frame is the client's
                        yield batch
                    raise
                if batch:
                    yield batch
                if translator.error is not None:
                    break
                if pending > limit:
                    resp.abandon()
                    raise ResponseTooLarge("one stream event", limit, "max_event_bytes")
            events = translator.finish()
            if events:
                yield events
        except NetworkError as exc:
            raise self.transport_error(exc) from None
        except (ParserError, msgspec.DecodeError) as exc:
            raise UpstreamError(f"{self.name}: unreadable event stream ({type(exc).__name__})", provider=self.name,
                                retryable=True, status=502, code="upstream_invalid_response") from None
        finally:
            await resp.aclose()

    # --- errors ------------------------------------------------------------------------------

    async def error_from_response(self, resp: UpstreamResponse) -> UpstreamError:
        try:
            body = await resp.read_prefix()  # a message fits; the rest of a huge error body is not read
        except NetworkError:
            body = b""
        return self.aws_error(resp.status, body, resp.headers.get("x-amzn-errortype"),
                              resp.headers.get("retry-after"))

    def aws_error(self, status: int, body: bytes, error_type: str | None = None,
                  retry_after: str | None = None) -> UpstreamError:
        """An AWS error (type in `x-amzn-errortype`, body `{"message"}` or `{"Message"}`) in OpenAI's shape."""
        name = (error_type or "").split(":", 1)[0]
        message: str | None = None
        try:
            data = _decode(body) if body else None
        except msgspec.DecodeError:
            data = None
        if isinstance(data, dict):
            message = data.get("message") or data.get("Message")
            if not name and isinstance(data.get("__type"), str):
                name = data["__type"].rsplit("#", 1)[-1]
        if not isinstance(message, str) or not message:
            message = self.parse_error_body(body)[0] if body else None
        status, code = AWS_ERRORS.get(name, (status, None))
        headers = {"retry-after": retry_after or "1"} if status == 429 else None
        text = f"{name}: {message}" if name and message else (message or name or f"HTTP {status}")
        return UpstreamError(f"{self.name}: {self.redact_secrets(text)}", provider=self.name,
                             retryable=status in RETRYABLE, status=status, type=status_error_type(status),
                             code=code, headers=headers)


def _frame_error(headers: dict[str, Any], payload: bytes) -> tuple[str, str, int]:
    """(code, message, status) for an `exception` or `error` eventstream frame."""
    if headers.get(":message-type") == "exception":
        try:
            data = _decode(payload) if payload else {}
        except msgspec.DecodeError:
            data = {"message": payload.decode(errors="replace")}
        return stream_exception(str(headers.get(":exception-type") or "exception"),
                                data if isinstance(data, dict) else {})
    code = str(headers.get(":error-code") or "upstream_error")
    return code, f"{code}: {headers.get(':error-message') or 'stream error'}", 502
