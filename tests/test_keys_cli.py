"""`sluice keys`: keys created by the CLI authenticate; revoked ones stop; only hashes are stored."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.conftest import running_gateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer


def sluice(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_keys_lifecycle(tmp_path: Path, upstream: ReplayServer) -> None:
    db = tmp_path / "keys.db"
    config_text = f"""
database: sqlite:///{db}
builtin_catalog: false
providers:
  up: {{type: openai-chat, base_url: "{upstream.url}/v1", api_key: sk-upstream-x}}
models:
  m: {{routes: [{{provider: up, model: gpt-4o}}]}}
"""
    config = tmp_path / "sluice.yaml"
    config.write_text(config_text)

    created = sluice(config, "keys", "create", "--name", "team-a")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-sluice-") and len(key) > 40
    assert sluice(config, "keys", "create", "--name", "team-a").returncode == 1  # names are unique
    other = sluice(config, "keys", "create", "--name", "team-b").stdout.strip().splitlines()[-1]

    listing = sluice(config, "keys", "list").stdout
    assert "team-a" in listing and "team-b" in listing and key not in listing

    stored = sqlite3.connect(db).execute("select key_hash, prefix from api_keys").fetchall()
    assert all(key not in row[0] and len(row[0]) == 64 for row in stored)

    with running_gateway(config_text) as gw:
        upstream.enqueue(load(fixtures_root() / "openai-chat/vercel-ai/openai-text.json")[0])
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        assert client.responses.create(model="m", input="hi").status == "completed"
        # Keys exist, so an unauthenticated or wrong request is refused.
        assert httpx.post(f"{gw.url}/v1/responses", json={"model": "m", "input": "x"}).status_code == 401
        assert httpx.get(f"{gw.url}/v1/models", headers={"authorization": "Bearer sk-sluice-nope"}).status_code == 401

    revoked = sluice(config, "keys", "revoke", "team-a")
    assert revoked.returncode == 0
    assert sluice(config, "keys", "revoke", "team-a").returncode == 1
    assert "revoked" in sluice(config, "keys", "list").stdout

    with running_gateway(config_text) as gw:
        resp = httpx.get(f"{gw.url}/v1/models", headers={"authorization": f"Bearer {key}"})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
        resp = httpx.get(f"{gw.url}/v1/models", headers={"authorization": f"Bearer {other}"})
        assert resp.status_code == 200


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("providers:\n  x: {type: carrier-pigeon}\n")
    result = sluice(config, "keys", "list")
    assert result.returncode == 2
    assert "carrier-pigeon" in result.stderr or "type" in result.stderr
