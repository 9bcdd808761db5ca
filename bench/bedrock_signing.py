#!/usr/bin/env python3
"""What SigV4 signing costs the Bedrock adapter per request, once its credentials are frozen.

    .venv/bin/python bench/bedrock_signing.py [--requests 2000]

docs/providers.md quotes this figure (~80 µs per request on the reference machine). It moved here
from the test suite: wall-clock numbers depend on the machine, so the tests assert the behaviour
behind them instead (credentials resolved once and refreshed off the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from sluice.config import ProviderConfig
from sluice.providers.bedrock import BedrockAdapter

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


async def per_request(adapter: BedrockAdapter, url: str, payload: bytes, n: int) -> float:
    await adapter.signed_headers(url, payload)  # warm up: credentials frozen, code paths hot
    start = time.perf_counter()
    for _ in range(n):
        await adapter.signed_headers(url, payload)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    config = ProviderConfig(type="bedrock", region="us-east-1", aws_access_key_id="AKIDBENCH",
                            aws_secret_access_key="bench-secret")
    adapter = BedrockAdapter("bench", config)
    payload = json.dumps({"messages": [{"role": "user", "content": [{"text": "x" * 4000}]}]}).encode()
    seconds = asyncio.run(per_request(adapter, adapter.url(MODEL, False), payload, args.requests))
    print(f"SigV4 over a {len(payload)}-byte body: {seconds * 1e6:.0f} µs per request ({args.requests} requests)")


if __name__ == "__main__":
    main()
