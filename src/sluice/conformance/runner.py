"""The `sluice conformance` command: run the scenarios against a deployment, print a table, set the exit status.

Only the standard library is imported here; the scenarios (and with them the `openai` SDK) are
imported when the command runs, so `sluice serve` never loads the SDK and a missing SDK is a
clear message rather than a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# name -> what it checks (the order is the order they run in)
SCENARIOS: dict[str, str] = {
    "create": "responses.create: a completed Response with text, valid against the SDK's types",
    "stream": "responses.stream: typed events numbered from 0, items added before their deltas and done "
              "after, one terminal event, the text deltas adding up to the final text",
    "tool_loop": "a function tool: turn 1 calls it (tool_choice required), turn 2 answers from the "
                 "function_call_output",
    "parse": "responses.parse with a pydantic model (json_schema structured output)",
    "reasoning": "reasoning with include=[reasoning.encrypted_content], the reasoning items sent back in "
                 "turn 2 (streamed)",
    "logprobs": "include=[message.output_text.logprobs] with top_logprobs (streamed)",
    "usage": "usage with input_tokens_details.cached_tokens and output_tokens_details.reasoning_tokens, and "
             "cost.total",
    "errors": "an invalid parameter is a 400 in OpenAI's error shape naming it (also for a stream), an unknown "
              "model a 404 model_not_found",
}
RESULTS = ("ok", "failed", "unsupported")
DEFAULT_TIMEOUT = 120.0
INSTALL_HINT = "pip install 'sluice[conformance]'"


class SDKMissing(Exception):
    """The `openai` SDK (or pydantic) is not installed, or too old."""


@dataclass
class Result:
    scenario: str
    result: str  # "ok" | "failed" | "unsupported"
    detail: str
    seconds: float


@dataclass
class Report:
    base_url: str
    model: str
    sdk: str  # e.g. "openai 1.99.0"
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.scenario for r in self.results if r.result == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "sdk": self.sdk, "passed": not self.failed,
                "failed": self.failed, "results": [asdict(r) for r in self.results]}


def api_base(url: str) -> str:
    """The SDK's base URL for a deployment: `http://host:8080` and `http://host:8080/v1` both work."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must be an http:// or https:// URL, not {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def select(names: str | Sequence[str] | None) -> list[str]:
    """The scenarios to run, in their usual order; ValueError for a name that is not one."""
    if names is None:
        return list(SCENARIOS)
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    wanted = [n for n in wanted if n]
    unknown = [n for n in wanted if n not in SCENARIOS]
    if unknown or not wanted:
        raise ValueError(f"unknown scenario {', '.join(unknown) or '(none given)'}; choose from {', '.join(SCENARIOS)}")
    return [n for n in SCENARIOS if n in wanted]


def run(base_url: str, model: str, *, api_key: str | None = None, scenarios: str | Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT, on_result: Callable[[Result], None] | None = None) -> Report:
    """Run the scenarios against the deployment at `base_url` with `model`, one after the other."""
    names = select(scenarios)
    checks = _load_scenarios()
    report = Report(api_base(base_url), model, _sdk_version())
    client = checks.make_client(report.base_url, api_key, timeout)
    try:
        for name in names:
            ctx = checks.Context(client, model)
            start = time.perf_counter()
            result, detail = checks.run_scenario(ctx, name)
            report.results.append(Result(name, result, detail, round(time.perf_counter() - start, 3)))
            if on_result is not None:
                on_result(report.results[-1])
    finally:
        client.close()
    return report


def _load_scenarios() -> Any:
    try:
        from sluice.conformance import scenarios
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("openai", "pydantic"):
            raise
        raise SDKMissing(f"sluice conformance needs the openai SDK (>= 1.99) and pydantic: {INSTALL_HINT} "
                         f"({exc})") from exc
    return scenarios


# --- output -------------------------------------------------------------------------------------

_WIDTH = max(len(name) for name in SCENARIOS)


def header(report: Report) -> str:
    return (f"sluice conformance: model {report.model} at {report.base_url} ({report.sdk})\n\n"
            f"{'SCENARIO':<{_WIDTH}}  {'RESULT':<11}  {'TIME':>7}  DETAIL")


def row(result: Result) -> str:
    label = "FAILED" if result.result == "failed" else result.result
    detail = " ".join(result.detail.split())
    return f"{result.scenario:<{_WIDTH}}  {label:<11}  {result.seconds:>6.2f}s  {detail}"


def summary(report: Report) -> str:
    counts = {kind: sum(r.result == kind for r in report.results) for kind in RESULTS}
    line = f"{counts['ok']} ok, {counts['unsupported']} unsupported, {counts['failed']} failed"
    return f"{line}\nFAILED: {', '.join(report.failed)}" if report.failed else line


# --- the command --------------------------------------------------------------------------------


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """`sluice conformance ...` on the CLI's subcommands."""
    indent = " " * (_WIDTH + 4)
    rows = [textwrap.fill(what, 100, initial_indent=f"  {name:<{_WIDTH}}  ", subsequent_indent=indent)
            for name, what in SCENARIOS.items()]
    notes = textwrap.fill("A scenario the model cannot do by capability (the deployment answers 400 "
                          "unsupported_parameter, or the upstream keeps no reasoning state) is reported unsupported, "
                          "not failed. Exit status: 0 when no scenario failed, 1 when one did, 2 for a usage error or "
                          f"a missing SDK ({INSTALL_HINT}).", 100)
    epilog = "scenarios:\n" + "\n".join(rows) + "\n\n" + notes
    parser = commands.add_parser(
        "conformance", help="check a running deployment and a model with the official openai SDK",
        description="Run the conformance scenarios against a running Sluice (or any Responses API) with the "
                    "official openai SDK, and print what works.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="the deployment, e.g. http://127.0.0.1:8080 (or .../v1)")
    parser.add_argument("--model", required=True, help="the model to check, as clients name it")
    parser.add_argument("--api-key", help="a key of the deployment (default: $SLUICE_API_KEY; never $OPENAI_API_KEY)")
    parser.add_argument("--scenarios", help="comma-separated, from the scenarios below (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object, not a table")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for one answer (default {DEFAULT_TIMEOUT:g})")
    return parser


def command(args: argparse.Namespace) -> int:
    """Run `sluice conformance`; the exit status is 1 when a scenario failed, 2 for a usage error."""
    try:
        select(args.scenarios)
        base_url = api_base(args.base_url)
    except ValueError as exc:
        print(f"sluice conformance: {exc}", file=sys.stderr)
        return 2
    try:
        _load_scenarios()
    except SDKMissing as exc:
        print(f"sluice conformance: {exc}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("SLUICE_API_KEY")
    if not args.json:  # rows appear as their scenarios end: against a real model a run takes a while
        print(header(Report(base_url, args.model, _sdk_version())), flush=True)
    try:
        report = run(base_url, args.model, api_key=api_key, scenarios=args.scenarios, timeout=args.timeout,
                     on_result=None if args.json else lambda result: print(row(result), flush=True))
    except KeyboardInterrupt:
        print("sluice conformance: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"\n{summary(report)}")
    return 1 if report.failed else 0


def _sdk_version() -> str:
    import openai

    return f"openai {openai.__version__}"
