"""Small pieces with sharp edges: config expansion, SSE framing, cost arithmetic, catalog naming."""

from __future__ import annotations

import pytest

from sluice.accounting.cost import response_cost
from sluice.canonical.response import normalize_usage
from sluice.config import ConfigError, Price, expand_env, parse_config
from sluice.providers.sse import SSEDecoder
from sluice.routing.catalog import build_catalog


def test_env_expansion() -> None:
    env = {"KEY": "secret", "EMPTY": ""}
    assert expand_env("a ${KEY} b", env) == "a secret b"
    assert expand_env("${MISSING:-fallback}", env) == "fallback"
    assert expand_env("${EMPTY:-fallback}", env) == "fallback"
    assert expand_env("${MISSING}", env) == ""


def test_config_contract_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_KEY", "sk-from-env")
    config = parse_config("""
database: sqlite:///sluice.db
redis: redis://127.0.0.1:6379/0
master_key: ${SLUICE_TEST_KEY}
providers:
  my-openai:
    type: openai
    base_url: http://127.0.0.1:8900/v1
    api_key: ${OPENAI_API_KEY_UNSET_FOR_TEST}
models:
  gpt-5.2:
    aliases: [gpt5]
    routes:
      - provider: my-openai
        model: gpt-5.2
        price: {input: 1.75, cached_input: 0.175, output: 14.0}
""")
    assert config.master_key == "sk-from-env"
    assert config.providers["my-openai"].api_key is None  # unset variable: no key, not ""
    assert config.models["gpt-5.2"].routes[0].price == Price(input=1.75, output=14.0, cached_input=0.175)


@pytest.mark.parametrize("text", ["providers: [1, 2]", "providers:\n  x: {type: nope}", "models: {a: {routes: 3}}",
                                  "unknown_key: 1", "{{{"])
def test_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text)


@pytest.mark.parametrize("url", ["http://h:6379", "redis://h:port/0", "redis://:pw-secret@/0", "redis://h/db"])
def test_a_redis_url_the_client_cannot_use_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="redis") as caught:
        parse_config(f"redis: '{url}'")
    assert "pw-secret" not in str(caught.value)


def test_redis_urls_that_work() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@cache.internal:6380", "unix:///run/redis.sock"):
        assert parse_config(f"redis: '{url}'").redis == url


def test_route_to_undefined_provider_is_a_config_error() -> None:
    config = parse_config("builtin_catalog: false\nmodels: {m: {routes: [{provider: ghost, model: x}]}}")
    with pytest.raises(ConfigError, match="ghost"):
        build_catalog(config, environ={})


def test_builtin_catalog_follows_environment() -> None:
    empty = build_catalog(parse_config(""), environ={})
    assert empty.models == {}
    catalog = build_catalog(parse_config(""), environ={"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    assert catalog.providers["openai"].api_key == "sk-x"
    assert "gpt-5.2" in catalog.models
    assert all(r.provider in ("openai", "anthropic") for entry in catalog.models.values() for r in entry.routes)
    route = catalog.resolve("oai/gpt-5.2")[0]  # provider alias
    assert (route.provider, route.model) == ("openai", "gpt-5.2")


def test_sse_decoder_handles_any_chunking() -> None:
    wire = b'event: a\ndata: {"x":1}\n\n: comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
    for step in (1, 2, 3, 7, len(wire)):
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(wire), step):
            events += decoder.feed(wire[i : i + step])
        events += decoder.flush()
        assert events == [("a", b'{"x":1}'), (None, b"line1\nline2"), (None, b"[DONE]")]
    crlf = SSEDecoder()
    assert crlf.feed(b"data: 1\r") == []
    assert crlf.feed(b"\n\r\ndata: 2\r\n\r\n") == [(None, b"1"), (None, b"2")]
    assert SSEDecoder().flush() == []
    tail = SSEDecoder()
    tail.feed(b"data: last")
    assert tail.flush() == [(None, b"last")]


def test_cost_prices_cached_and_written_tokens() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    usage = normalize_usage({"input_tokens": 1_000_000 + 200_000 + 100_000, "output_tokens": 10_000,
                             "input_tokens_details": {"cached_tokens": 200_000, "cached_tokens_created": 100_000}})
    assert response_cost(usage, price) == pytest.approx(3.0 + 0.06 + 0.375 + 0.15)
    # Without explicit cache prices everything is billed at the input price.
    assert response_cost(usage, Price(input=1.0, output=2.0)) == pytest.approx(1.3 + 0.02)
    assert response_cost(usage, None) is None


def test_usage_normalization_accepts_cache_write_tokens() -> None:
    usage = normalize_usage({"input_tokens": 10, "output_tokens": 5,
                             "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3}})
    assert usage["input_tokens_details"] == {"cached_tokens": 2, "cached_tokens_created": 3, "cache_write_tokens": 3,
                                             "cache_write_1h_tokens": 0}
    assert usage["total_tokens"] == 15
    assert normalize_usage(None)["total_tokens"] == 0


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"event: a\ndata: 1\n\n", [("a", b"1")]),
        (b": comment\ndata: x\n\n", [(None, b"x")]),
        (b"data: a\ndata: b\n\n", [(None, b"a\nb")]),  # multi-line data must not take the fast path
        (b"id: 3\ndata: q\n\n", [(None, b"q")]),
        (b"data: 1\n\n\ndata: 2\n\n", [(None, b"1"), (None, b"2")]),
        (b"data:nospace\n\n", [(None, b"nospace")]),
        (b"event: a\ndata: 1\n\ndata: a\ndata: b\n\nevent: c\ndata: 3\n\n",
         [("a", b"1"), (None, b"a\nb"), ("c", b"3")]),
    ],
)
def test_sse_block_shapes(wire: bytes, expected: list[tuple[str | None, bytes]]) -> None:
    assert SSEDecoder().feed(wire) == expected


def test_env_values_cannot_change_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_KEY", "abc #not-a-comment")
    monkeypatch.setenv("SLUICE_TEST_NUMBER", "12345678")
    monkeypatch.setenv("SLUICE_TEST_PORT", "9090")
    config = parse_config("master_key: ${SLUICE_TEST_KEY}\ndatabase: ${SLUICE_TEST_NUMBER}\n"
                          "server: {port: '${SLUICE_TEST_PORT}'}\n")
    assert config.master_key == "abc #not-a-comment"
    assert config.database == "12345678"  # a string, as written
    assert config.server.port == 9090


def test_adapters_redact_every_credential_they_hold() -> None:
    from sluice.config import ProviderConfig
    from sluice.providers import create_adapter

    adapter = create_adapter("azure", ProviderConfig(
        type="openai-chat", api_key="plain-key-123456", aws_session_token="session-token-abcdef",
        headers={"api-key": "azure-key-abcdef12", "authorization": "Token custom-token-999999"}))
    # A key-shaped string no configured secret matches (built here so no key-like literal is committed).
    unknown_key = "sk" + "-" + "abcdefghij" * 2 + "1234"
    text = ("failed with plain-key-123456, azure-key-abcdef12, custom-token-999999, session-token-abcdef "
            f"and {unknown_key}")
    redacted = adapter.redact_secrets(text)
    for secret in ("plain-key-123456", "azure-key-abcdef12", "custom-token-999999", "session-token-abcdef",
                   unknown_key):
        assert secret not in redacted
