"""One module per upstream wire protocol. Adapters translate; they don't route, store or bill."""

from __future__ import annotations

import aiohttp

from sluice.config import ProviderConfig
from sluice.providers.base import Adapter


def create_adapter(name: str, config: ProviderConfig, session: aiohttp.ClientSession) -> Adapter:
    """The adapter for a provider's wire protocol (`type` in the config)."""
    if config.type == "openai":
        from sluice.providers.openai_responses import OpenAIResponsesAdapter

        return OpenAIResponsesAdapter(name, config, session)
    if config.type == "openai-chat":
        from sluice.providers.openai_chat import OpenAIChatAdapter

        return OpenAIChatAdapter(name, config, session)
    if config.type == "anthropic":
        from sluice.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(name, config, session)
    if config.type == "gemini":
        from sluice.providers.gemini import GeminiAdapter

        return GeminiAdapter(name, config, session)
    if config.type == "bedrock":
        from sluice.providers.bedrock import BedrockAdapter

        return BedrockAdapter(name, config, session)
    raise ValueError(f"unknown provider type {config.type!r}")
