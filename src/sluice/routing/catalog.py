"""The model catalog: canonical names, aliases, `provider/model`, and the routes serving each.

Built from the built-in catalog (`builtin_catalog.yaml`, providers enabled by their usual
environment variables) overlaid with the operator's config: a configured provider or model
replaces the built-in one of the same name.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
import yaml

from sluice.config import Config, ConfigError, ModelConfig, Price, ProviderConfig, Timeouts
from sluice.errors import InvalidRequest, NotFound

ALL_CAPABILITIES = frozenset({
    "tools", "parallel_tool_calls", "images", "files", "json_schema", "reasoning", "logprobs", "temperature",
    "prompt_caching",
})


# The reference's provider names and aliases (`routing.provider.fallbacks`): family -> (its names,
# the wire type whose providers belong to it, if any). docs/routing.md has the table.
PROVIDER_FAMILIES: dict[str, tuple[frozenset[str], str | None]] = {
    "openai": (frozenset({"openai", "open-ai", "oai"}), "openai"),
    "anthropic": (frozenset({"anthropic", "anthropic-ai"}), "anthropic"),
    "azure": (frozenset({"azure", "microsoft", "microsoft-azure", "ms-azure"}), None),
    "bedrock": (frozenset({"bedrock", "aws", "aws-bedrock", "amazon", "amazon-bedrock"}), "bedrock"),
    "xai": (frozenset({"xai", "x-ai", "grok"}), None),
    "cohere": (frozenset({"cohere"}), None),
    "mistral": (frozenset({"mistral", "mistralai"}), None),
    "vertex": (frozenset({"vertex", "google-vertex", "vertex-ai", "gemini", "google"}), "gemini"),
    "cloudflare": (frozenset({"cloudflare", "cf", "cloudflare-ai"}), None),
    "huggingface": (frozenset({"huggingface", "hf", "hugging-face"}), None),
}
_FAMILY_OF = {alias: family for family, (names, _) in PROVIDER_FAMILIES.items() for alias in names}
# Provider names matched word by word (`my-open-ai` has no word "open-ai"): the aliases without a dash.
PROVIDER_FAMILIES = {family: (frozenset(n for n in names if "-" not in n), wire)
                     for family, (names, wire) in PROVIDER_FAMILIES.items()}

_UPSTREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]*$")


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: a provider and the upstream's own model id."""

    provider: str
    model: str
    price: Price | None
    capabilities: frozenset[str]
    canonical: str
    context_window: int | None = None  # the model's, in tokens; None: unknown (never skipped for size)
    rank: int | None = None  # the route's static rank (`sort: performance`), else None
    model_rank: int | None = None  # the model's static rank
    # Every upstream timeout of this route (its own over its provider's over the defaults),
    # resolved once when the catalog is built; None (a route made by hand): the provider's.
    timeouts: Timeouts | None = None
    # What served the response, as reported in its `model` field: `provider/model`. Made once
    # here, since routing keys its measurements, cooldowns and affinities by it on every attempt.
    label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.provider}/{self.model}")


@dataclass(slots=True)
class ModelEntry:
    name: str
    aliases: list[str]
    owned_by: str
    context_window: int | None
    max_output_tokens: int | None
    capabilities: frozenset[str] | None
    routes: tuple[Route, ...] = ()

    def card(self, created: int) -> dict[str, Any]:
        """The model's `/v1/models` object: OpenAI's fields plus the catalog's."""
        return {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": self.owned_by,
            "aliases": self.aliases,
            "providers": list(dict.fromkeys(route.provider for route in self.routes)),
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "capabilities": sorted(self.capabilities) if self.capabilities is not None else None,
            "routes": [
                {"provider": r.provider, "model": r.model,
                 "price": msgspec.to_builtins(r.price) if r.price else None}
                for r in self.routes
            ],
        }


class _BuiltinCatalog(msgspec.Struct):
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}


def load_builtin() -> _BuiltinCatalog:
    text = resources.files("sluice.routing").joinpath("builtin_catalog.yaml").read_text()
    return msgspec.convert(yaml.safe_load(text) or {}, _BuiltinCatalog)


def enabled_builtin_providers(builtin: _BuiltinCatalog, environ: dict[str, str]) -> dict[str, ProviderConfig]:
    """Built-in providers whose environment variable is set, with key and URL filled in."""
    enabled = {}
    for name, provider in builtin.providers.items():
        key = environ.get(provider.api_key_env) if provider.api_key_env else None
        url = environ.get(provider.base_url_env) if provider.base_url_env else None
        if not key and not url:
            continue
        changes: dict[str, Any] = {}
        if key and provider.type != "bedrock":
            changes["api_key"] = key
        if url:
            changes["base_url"] = url
        enabled[name] = msgspec.structs.replace(provider, **changes)
    return enabled


class Catalog:
    """Resolves model names to routes; lists what can be served."""

    def __init__(self, providers: dict[str, ProviderConfig], models: dict[str, ModelConfig]) -> None:
        self.providers = providers
        self.created = int(time.time())
        self._timeouts = {name: provider.resolved_timeouts() for name, provider in providers.items()}
        self._provider_names: dict[str, str] = {}
        for name, provider in providers.items():
            self._provider_names[name.lower()] = name
            for alias in provider.aliases:
                self._provider_names.setdefault(alias.lower(), name)
        self.models: dict[str, ModelEntry] = {}
        self._names: dict[str, ModelEntry] = {}
        for name, model in models.items():
            entry = self._entry(name, model)
            if entry.routes:
                self.models[name] = entry
        for entry in self.models.values():
            self._names[entry.name.lower()] = entry
        for entry in self.models.values():
            for alias in entry.aliases:
                self._names.setdefault(alias.lower(), entry)

    def _entry(self, name: str, model: ModelConfig) -> ModelEntry:
        base_caps = frozenset(model.capabilities) if model.capabilities is not None else None
        routes = []
        for route in model.routes:
            if route.provider not in self.providers:
                continue  # a built-in route whose provider is not enabled here
            caps = frozenset(route.capabilities) if route.capabilities is not None else base_caps
            timeouts = self._timeouts[route.provider]
            if route.timeouts is not None:
                timeouts = route.timeouts.over(timeouts)
            routes.append(Route(route.provider, route.model, route.price,
                                caps if caps is not None else ALL_CAPABILITIES, name,
                                model.context_window, route.rank, model.rank, timeouts=timeouts))
        owned_by = model.owned_by or (model.routes[0].provider if model.routes else "sluice")
        return ModelEntry(name, list(model.aliases), owned_by, model.context_window, model.max_output_tokens,
                          base_caps, tuple(routes))

    def provider_name(self, name: str) -> str | None:
        return self._provider_names.get(name.lower())

    def providers_named(self, name: str) -> list[str]:
        """The configured providers a `routing.provider.fallbacks` entry means, in config order.

        A configured provider name or alias means that provider alone. Otherwise a provider family
        of the reference (`openai`, `aws`, `grok`, ...; `PROVIDER_FAMILIES`) means every configured
        provider of that family: whose wire `type` is the family's (anthropic, bedrock, gemini,
        openai), or whose name has the family's name as a word (`my-xai`, `mistral-eu`).
        """
        exact = self.provider_name(name)
        if exact is not None:
            return [exact]
        family = _FAMILY_OF.get(name.lower())
        if family is None:
            return []
        words, wire = PROVIDER_FAMILIES[family]
        found = []
        for pname, provider in self.providers.items():
            tokens = set(re.split(r"[^a-z0-9]+", pname.lower()))
            if provider.type == wire or tokens & words:
                found.append(pname)
        return found

    def pinned_provider(self, name: str) -> str | None:
        """The provider a `provider/model` name pins, or None for a plain model name."""
        if self._names.get(name.lower()) is not None:
            return None
        prefix, slash, rest = name.partition("/")
        return self.provider_name(prefix) if slash and rest else None

    def lookup(self, name: str) -> ModelEntry | None:
        return self._names.get(name.lower())

    def resolve(self, name: str) -> Sequence[Route]:
        """The routes for a model name, in preference order; `NotFound` when nothing serves it."""
        entry = self._names.get(name) or self._names.get(name.lower())
        if entry is not None:
            return entry.routes
        prefix, slash, rest = name.partition("/")
        provider = self.provider_name(prefix) if slash and rest else None
        if provider is None:
            hint = "" if self.providers else (
                " No provider is enabled: set a provider's API key variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, "
                "GEMINI_API_KEY, ...) or pass a config file with --config.")
            raise NotFound(
                f"The model `{name}` does not exist or you do not have access to it.{hint}",
                param="model", code="model_not_found",
            )
        entry = self._names.get(rest.lower())
        if entry is not None:
            pinned = [r for r in entry.routes if r.provider == provider]
            if pinned:
                # Pinned first; the same model on other providers stays as fallback.
                return [*pinned, *(r for r in entry.routes if r.provider != provider)]
        # Any upstream model id on a known provider: served as asked, unpriced. The id ends up in
        # upstream URLs (Gemini, Bedrock), so it may not carry a query, a fragment or `..`.
        if not _UPSTREAM_ID.match(rest) or ".." in rest.split("/"):
            raise InvalidRequest(f"Invalid model id {rest!r} for provider '{provider}'.", param="model",
                                 code="invalid_value")
        return [Route(provider, rest, None, ALL_CAPABILITIES, name, timeouts=self._timeouts[provider])]

    def cards(self) -> list[dict[str, Any]]:
        return [entry.card(self.created) for entry in self.models.values()]


def build_catalog(config: Config, environ: dict[str, str] | None = None) -> Catalog:
    environ = dict(os.environ) if environ is None else environ
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    if config.builtin_catalog:
        builtin = load_builtin()
        providers.update(enabled_builtin_providers(builtin, environ))
        models.update(builtin.models)
    providers.update(config.providers)
    for name, model in config.models.items():
        # A configured model takes its name and aliases away from any built-in entry.
        taken = {name.lower(), *(alias.lower() for alias in model.aliases)}
        for other in list(models):
            if other.lower() in taken:
                del models[other]
            else:
                other_model = models[other]
                if any(alias.lower() in taken for alias in other_model.aliases):
                    models[other] = msgspec.structs.replace(
                        other_model, aliases=[a for a in other_model.aliases if a.lower() not in taken])
        models[name] = model
    for name, model in config.models.items():
        for route in model.routes:
            if route.provider not in providers:
                raise ConfigError(f"model {name!r}: route provider {route.provider!r} is not defined under providers")
    return Catalog(providers, models)
