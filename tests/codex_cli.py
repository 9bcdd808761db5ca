"""Install the real Codex CLI (npm `@openai/codex`, a native binary) for the tests that drive it.

`python3 -m tests.codex_cli` installs it (CI does this before the tests, `.ci/run`); the test
fixture calls `ensure_codex()` too, so a developer's first run installs it by itself. It goes into
`.cache/codex/` in the repository (gitignored), or `$SLUICE_CODEX_DIR`. The version is pinned, so
that a new Codex release cannot break the suite unannounced; `SLUICE_CODEX_VERSION=latest` tries
the current one. Standard library only: CI runs this before the virtualenv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CODEX_VERSION = "0.171.0"  # the release whose requests the tests were written against
ROOT = Path(__file__).resolve().parents[1]


class CodexUnavailable(Exception):
    """npm is missing: the only reason a test may skip instead of failing."""


def codex_dir() -> Path:
    return Path(os.environ.get("SLUICE_CODEX_DIR") or ROOT / ".cache" / "codex")


def wanted_version() -> str:
    return os.environ.get("SLUICE_CODEX_VERSION") or CODEX_VERSION


def installed_version(prefix: Path) -> str | None:
    package = prefix / "node_modules" / "@openai" / "codex" / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_codex(timeout: float = 600) -> Path:
    """The `codex` executable, installed first if needed; raises `CodexUnavailable` without npm."""
    prefix = codex_dir()
    binary = prefix / "node_modules" / ".bin" / "codex"
    version = wanted_version()
    current = installed_version(prefix)
    if binary.exists() and current is not None and (current == version or version == "latest"):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise CodexUnavailable("npm is not installed: the Codex CLI cannot be installed")
    prefix.mkdir(parents=True, exist_ok=True)
    # The platform's native binary comes as an optional dependency of the package.
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                    "--loglevel=error", f"@openai/codex@{version}"], check=True, timeout=timeout,
                   stdin=subprocess.DEVNULL)
    if not binary.exists():
        raise RuntimeError(f"npm installed @openai/codex@{version} but {binary} is missing")
    return binary


if __name__ == "__main__":
    try:
        path = ensure_codex()
    except CodexUnavailable as exc:
        print(f"codex_cli: {exc}; the Codex CLI tests will be skipped", file=sys.stderr)
        sys.exit(0)
    print(f"codex_cli: {path} ({installed_version(codex_dir())})")
