"""One module per upstream wire protocol. Adapters translate; they don't route, store or bill."""

from __future__ import annotations

from sluice.config import ProviderConfig
from sluice.providers.base import Adapter


def create_adapter(name: str, config: ProviderConfig) -> Adapter:
    """The adapter for a provider's wire protocol (`type` in the config)."""
    if config.type == "openai":
        from sluice.providers.openai_responses import OpenAIResponsesAdapter

        return OpenAIResponsesAdapter(name, config)
    if config.type == "openai-chat":
        from sluice.providers.openai_chat import OpenAIChatAdapter

        return OpenAIChatAdapter(name, config)
    if config.type == "anthropic":
        from sluice.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(name, config)
    if config.type == "gemini":
        from sluice.providers.gemini import GeminiAdapter

        return GeminiAdapter(name, config)
    if config.type == "bedrock":
        from sluice.providers.bedrock import BedrockAdapter

        return BedrockAdapter(name, config)
    raise ValueError(f"unknown provider type {config.type!r}")
