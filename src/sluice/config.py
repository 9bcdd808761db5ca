"""Configuration: one YAML file (`--config` or `SLUICE_CONFIG`), every key optional.

The file's shape is a contract with operators: keys are added, never renamed. `${VAR}` and
`${VAR:-default}` expand from the environment before parsing, so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta

WireProtocol = Literal["openai", "openai-chat", "anthropic", "gemini", "bedrock"]

Capability = Literal[
    "tools",
    "parallel_tool_calls",
    "images",
    "files",
    "json_schema",
    "reasoning",
    "logprobs",
    "temperature",
    "prompt_caching",
]


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class _CredentialsInURL(ConfigError, ValueError):
    """Also a ValueError: msgspec reports those raised while it builds a struct as validation errors."""


_URL_CREDENTIALS = (
    "must not contain credentials (user:password@host): Sluice does not take credentials from URLs. "
    "Put the key in `api_key`, or the header the provider expects in `headers` "
    "(e.g. `authorization: Basic ...`)"
)


def _has_url_credentials(url: str | None) -> bool:
    if not url:
        return False
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. a broken [IPv6] host: look at the authority by hand
        netloc = re.split(r"[/?#]", url.partition("//")[2], maxsplit=1)[0]
    return "@" in netloc


PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
# Caps on what is read from an upstream (docs/security.md), per provider. Generous: a generated
# image can come whole, base64, in one answer or one stream event.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class Price(msgspec.Struct, forbid_unknown_fields=True):
    """USD per 1M tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None  # cache writes (Anthropic: the 5-minute TTL)
    cache_write_1h: float | None = None  # cache writes made for an hour (Anthropic's 1h TTL); else cache_write


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Upstream timeouts in seconds (docs/routing.md, "Timeouts"); an unset one inherits.

    A route's `timeouts` override its provider's field by field, the provider's override
    `DEFAULT_TIMEOUTS`. A timeout is the route's failure (504 `upstream_timeout`, retryable).
    """

    connect: PositiveSeconds | None = None  # opening a connection (TCP and TLS)
    first_byte: PositiveSeconds | None = None  # from the call's start to the headers and the first body bytes
    idle: PositiveSeconds | None = None  # the longest silence between body bytes after the first
    total: PositiveSeconds | None = None  # the whole call, the answer read to its end

    def over(self, base: Timeouts) -> Timeouts:
        """These timeouts, with `base`'s where these leave one unset."""
        return Timeouts(
            connect=base.connect if self.connect is None else self.connect,
            first_byte=base.first_byte if self.first_byte is None else self.first_byte,
            idle=base.idle if self.idle is None else self.idle,
            total=base.total if self.total is None else self.total,
        )


# Why these values (docs/routing.md, "Timeouts"): a non-streaming answer arrives whole, so
# `first_byte` bounds the whole generation of a non-streaming call, and reasoning models take
# minutes at high effort; a stream can be silent as long while the model reasons without
# summaries (Codex CLI waits 5 minutes for its Responses streams too). No `total`: every attempt
# is bounded by the request's deadline (`routing.deadline`).
DEFAULT_TIMEOUTS = Timeouts(connect=10.0, first_byte=300.0, idle=300.0, total=None)


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True):
    type: WireProtocol
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    # The older keys, kept working where `timeouts` leaves a field unset: `timeout` was the
    # longest wait for any upstream bytes (the answer's headers included), so it stands for
    # `timeouts.idle` and `timeouts.first_byte`; `connect_timeout` for `timeouts.connect`.
    timeout: PositiveSeconds | None = None
    connect_timeout: PositiveSeconds | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    options: dict[str, Any] = {}
    aliases: list[str] = []
    # A hosted tool (web_search, file_search, ...) this provider's protocol has no equivalent for:
    # left out of the upstream request and named in the `x-sluice-dropped-tools` response header
    # ("drop", so that agents that always send such tools work unchanged), or a 400 ("refuse").
    unsupported_tools: Literal["drop", "refuse"] = "drop"
    # An upstream is untrusted (docs/security.md): the most read of one whole (non-streaming)
    # answer, and of one stream event (SSE event or Bedrock eventstream frame) still being received.
    max_response_bytes: PositiveInt = DEFAULT_MAX_RESPONSE_BYTES
    max_event_bytes: PositiveInt = DEFAULT_MAX_EVENT_BYTES
    # Bedrock / AWS.
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    # Built-in catalog only: the provider is enabled by these environment variables.
    api_key_env: str | None = None
    base_url_env: str | None = None

    def __post_init__(self) -> None:
        # Rejected rather than supported: URL credentials are easy to leak (logs, error text) and
        # each provider wants its key in its own header. parse_config says which provider; this
        # catches the other ways in (a built-in provider's *_BASE_URL variable).
        if _has_url_credentials(self.base_url):
            raise _CredentialsInURL(f"a provider's base_url (or its *_BASE_URL variable) {_URL_CREDENTIALS}")

    def resolved_timeouts(self) -> Timeouts:
        """Every timeout of this provider: `timeouts`, then the older keys, then the defaults."""
        older = Timeouts(connect=self.connect_timeout, first_byte=self.timeout, idle=self.timeout)
        return self.timeouts.over(older).over(DEFAULT_TIMEOUTS)


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True):
    provider: str
    model: str
    price: Price | None = None
    capabilities: list[Capability] | None = None
    # Static quality rank for `sort: performance` (lower = better); unset: the model's rank.
    rank: int | None = None
    # Overrides the provider's timeouts field by field (e.g. a longer `first_byte` for a slow model).
    timeouts: Timeouts | None = None


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[RouteConfig] = []
    aliases: list[str] = []
    owned_by: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: list[Capability] | None = None
    # Static quality rank for `sort: performance` (lower = better); unranked models come after ranked ones.
    rank: int | None = None


Seconds = Annotated[float, Meta(gt=0)]

# The sorts and windows of a request's `routing` (docs/routing.md); the config's defaults for them
# are validated with the same patterns, so a default a request could not name is an error too.
SORT_PATTERN = (
    r"^(cost|performance|avg_latency|min_latency|max_latency|p(100|[1-9]?[0-9])_latency|avg_e2e_latency"
    r"|p(100|[1-9]?[0-9])_e2e_latency|uptime|throughput|total_requests|input_tokens|output_tokens|total_tokens)$"
)
INTERVAL_PATTERN = r"^\s*(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?|y|years?)\s*$"
Sort = Annotated[str, Meta(pattern=SORT_PATTERN)]
Interval = Annotated[str, Meta(pattern=INTERVAL_PATTERN)]


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 32 * 1024 * 1024
    log_level: str = "info"
    # Slow and idle clients (docs/security.md, "Limits"): each waiting connection holds a descriptor.
    idle_timeout: Seconds = 5.0  # a new connection that has not sent a byte yet
    keepalive_timeout: Seconds = 5.0  # between two requests on one connection
    header_timeout: Seconds = 10.0  # from a request's first byte to the end of its headers
    body_timeout: Seconds = 60.0  # from the end of the headers to the end of the body
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024  # request line + headers; over it: 431
    max_connections: Annotated[int, Meta(gt=0)] | None = None  # per worker; None: from the descriptor limit
    # What one request may decode to (docs/security.md, "Limits").
    max_json_depth: Annotated[int, Meta(ge=1, le=500)] = 64
    max_json_expansion: Annotated[float, Meta(ge=1)] = 5.0  # estimated decoded size / body size, bodies > 1 MiB
    max_input_items: Annotated[int, Meta(gt=0)] = 10_000
    max_content_parts: Annotated[int, Meta(gt=0)] = 10_000  # content parts of all input items together


class CooldownConfig(msgspec.Struct, forbid_unknown_fields=True):
    """When a failing route is taken out of rotation (routing/health.py, docs/routing.md)."""

    enabled: bool = True
    # Consecutive failures that open the route's cooldown.
    failures: Annotated[int, Meta(ge=1)] = 3
    # Or: this share of failures among at least `min_requests` attempts within `window` seconds.
    error_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Meta(ge=1)] = 10
    window: Annotated[float, Meta(gt=0)] = 60.0
    # The first cooldown; doubled each time a half-open probe fails, up to `max_duration`.
    duration: Annotated[float, Meta(gt=0)] = 30.0
    max_duration: Annotated[float, Meta(gt=0)] = 300.0


class AffinityConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Cache affinity: requests sharing a prompt prefix stick to the route that served the last one."""

    enabled: bool = True
    # How long a route stays preferred after serving: the provider's cache lifetime
    # (5 minutes; an hour when the request asks `cache_control.ttl: 1h`).
    ttl: Annotated[float, Meta(gt=0)] = 300.0
    ttl_1h: Annotated[float, Meta(gt=0)] = 3600.0
    # Most remembered prefixes per process (least recently used go first).
    max_entries: Annotated[int, Meta(ge=1)] = 100_000
    # Derive a `prompt_cache_key` from the API key (and `user`) when the request sends none.
    derive_prompt_cache_key: bool = True


class RoutingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How one request moves through its candidate routes."""

    # Retries of a route after a failure it calls retryable (429, 5xx, a broken connection),
    # before the next candidate is tried.
    retries: Annotated[int, Meta(ge=0)] = 1
    # First pause before a retry, doubled each time, with jitter; a Retry-After sets it instead.
    retry_backoff: float = 0.25
    # A Retry-After longer than this is not waited for: the next candidate is tried instead.
    max_retry_wait: float = 10.0
    # Upstream attempts one request may make in all (retries and fallbacks together).
    max_attempts: int = 8
    # Entries allowed in a request's `routing.model.fallbacks` / `routing.provider.fallbacks`.
    max_fallbacks: int = 16
    # No new attempt starts after this many seconds from the request's arrival.
    deadline: float = 600.0
    # Default for a request's `routing.model.sort` / `routing.provider.sort` (docs/routing.md):
    # any sort a request may name (cost, performance, p50_latency, uptime, ...); None keeps the
    # config order.
    sort: Sort | None = None
    # How `model: "auto"` picks among the catalog's models: the cheapest for the request, or by rank.
    auto: Literal["cheapest", "performance"] = "cheapest"
    # The window live-metric sorts read when a request gives no `routing.provider.interval`.
    interval: Interval = "15m"
    # Share of requests that try a route with no measurements yet first (live-metric sorts), so a
    # new or recovered route is measured instead of starved.
    explore: Annotated[float, Meta(ge=0, le=1)] = 0.05
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)
    affinity: AffinityConfig = msgspec.field(default_factory=AffinityConfig)


Seconds = Annotated[float, msgspec.Meta(gt=0)]


class DatabaseConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`database:` as a mapping. The plain string form (`database: <url>`) is the URL with these defaults."""

    url: str = "sqlite:///sluice.db"
    # Every wait on the database is bounded, so a down or frozen database is an error within
    # seconds (a 503 for the client), never a hang.
    connect_timeout: Seconds = 5.0  # opening a connection, or waiting for a pooled one
    statement_timeout: Seconds = 5.0  # one statement; on SQLite also the busy (lock) timeout


class Config(msgspec.Struct, forbid_unknown_fields=True):
    database: str | DatabaseConfig = "sqlite:///sluice.db"
    redis: str | None = None
    master_key: str | None = None
    builtin_catalog: bool = True
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}

    def database_config(self) -> DatabaseConfig:
        """`database` in its mapping form, whichever form the file used."""
        if isinstance(self.database, DatabaseConfig):
            return self.database
        return DatabaseConfig(url=self.database)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Replace `${VAR}` / `${VAR:-default}`; an unset variable without default becomes empty."""
    return _VAR.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), text)


def _expand(value: Any) -> Any:
    """Expand `${VAR}` inside string values, after parsing.

    Expanding the text before parsing would let a value's characters change the YAML itself:
    `SLUICE_MASTER_KEY='abc #x'` would become the key `abc`. `api_key: ${UNSET}` expands to an
    empty string, which means absent, not a key "".
    """
    if isinstance(value, str):
        return expand_env(value) if "${" in value else value
    if isinstance(value, dict):
        expanded = {k: _expand(v) for k, v in value.items()}
        return {k: v for k, v in expanded.items() if v != "" and v is not None}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def parse_config(text: str, *, source: str = "<config>") -> Config:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    expanded = _expand(raw)
    providers = expanded.get("providers")
    for name, provider in (providers if isinstance(providers, dict) else {}).items():
        if isinstance(provider, dict) and isinstance(provider.get("base_url"), str) \
                and _has_url_credentials(provider["base_url"]):
            # The URL itself is not repeated: its password would end up in the log.
            raise ConfigError(f"{source}: providers.{name}.base_url {_URL_CREDENTIALS}")
    try:
        config = msgspec.convert(expanded, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if config.redis is not None and (problem := _redis_url_problem(config.redis)):
        # Said at load time, in one line: the URL itself is not repeated (it may carry a password).
        raise ConfigError(f"{source}: redis: {problem}")
    return config


def _redis_url_problem(url: str) -> str | None:
    """Why `url` is not a Redis URL the client can use, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        return "not a valid URL (expected redis://host:port/db, rediss://... or unix:///path)"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "the URL must start with redis://, rediss:// or unix://"
    if parts.scheme != "unix" and not parts.hostname:
        return "the URL names no host"
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        return "the database (the URL's path) must be a number, e.g. redis://host:6379/0"
    del port
    return None


def load_config(path: str | Path | None = None) -> Config:
    """Read the config file named by `path` or `SLUICE_CONFIG`; defaults when neither is set."""
    path = path or os.environ.get("SLUICE_CONFIG")
    if not path:
        return Config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse_config(text, source=str(path))
