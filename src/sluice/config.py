"""Configuration: one YAML file (`--config` or `SLUICE_CONFIG`), every key optional.

The file's shape is a contract with operators: keys are added, never renamed. `${VAR}` and
`${VAR:-default}` expand from the environment before parsing, so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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


class Price(msgspec.Struct, forbid_unknown_fields=True):
    """USD per 1M tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True):
    type: WireProtocol
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    timeout: float = 600.0
    connect_timeout: float = 10.0
    options: dict[str, Any] = {}
    aliases: list[str] = []
    # Bedrock / AWS.
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    # Built-in catalog only: the provider is enabled by these environment variables.
    api_key_env: str | None = None
    base_url_env: str | None = None


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True):
    provider: str
    model: str
    price: Price | None = None
    capabilities: list[Capability] | None = None


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[RouteConfig] = []
    aliases: list[str] = []
    owned_by: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: list[Capability] | None = None


Seconds = Annotated[float, Meta(gt=0)]


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


class Config(msgspec.Struct, forbid_unknown_fields=True):
    database: str = "sqlite:///sluice.db"
    redis: str | None = None
    master_key: str | None = None
    builtin_catalog: bool = True
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}


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
    try:
        return msgspec.convert(_expand(raw), Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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
