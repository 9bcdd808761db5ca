#!/usr/bin/env python3
"""Sluice benchmark: Sluice vs LiteLLM's proxy vs the upstream called directly.

One command, from the repository root:

    python3 bench/run.py

It installs what it lacks (``wrk`` from Debian's packages, LiteLLM's proxy pinned to
``LITELLM_VERSION`` in ``bench/.venv-litellm``), starts the fake OpenAI upstream
(``bench/fake_upstream.py``) on loopback, then for each target in turn -- the upstream directly,
Sluice, LiteLLM -- checks that it answers ``POST /v1/responses`` correctly and drives it with wrk
(``bench/wrk/post.lua``) at concurrency 1/16/64, non-streaming and streaming (20 text deltas).

Reported per cell: requests/s, whole-response latency p50/p99, latency added over direct, CPU time
of the gateway's process tree per completed request (utime+stime from /proc) and its peak RSS
(VmRSS of the tree sampled every 20 ms). The gateway is pinned to one core and wrk + the fake upstream
to another with taskset. Results: stdout, ``bench/results.md`` and ``bench/results.json``.

Only the standard library is used here; the fake upstream runs on the project's venv (uvloop).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = BENCH / ".venv-litellm"
MASTER_KEY = "sk-bench-master"
MODEL = "bench-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(BENCH))
import fake_upstream  # noqa: E402  (stdlib-only at import time; used for expected payloads)

EXPECTED_TEXT = fake_upstream.TEXT
N_DELTAS = fake_upstream.N_DELTAS

TARGETS = {
    "direct": "upstream called directly",
    "sluice": "Sluice",
    "sluice-routed": "Sluice, routed (3 routes, sort p50_latency)",
    "litellm": f"LiteLLM proxy {LITELLM_VERSION}",
}

# Targets from the project issue (one worker, one core).
TARGET_RPS_RATIO = 20.0
TARGET_ADDED_P50_MS = 0.5
TARGET_ADDED_P99_MS = 2.0
TARGET_CPU_MS = {"json": 0.5, "stream": 1.5}
TARGET_RSS_MB = 120.0

# A cell during which other processes used more than this many cores is measured again.
NOISY_CORES = 0.15

_children: list[subprocess.Popen] = []


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- processes
def start(cmd: list[str], core: int | None, logfile: Path, env=None, cwd=None) -> subprocess.Popen:
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    with open(logfile, "wb") as fh:  # the child keeps its own copy of the descriptor
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    p._bench_log = logfile  # type: ignore[attr-defined]
    _children.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float = 10.0) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)  # its own session/group, started above
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in _children:
        _children.remove(p)


def _cleanup() -> None:
    for p in list(_children):
        stop(p, 5)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(proc._bench_log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout:.0f}s:\n{tail(proc._bench_log)}")


# --------------------------------------------------------------------------- /proc accounting
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError):
            pass
    return total / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree; keeps the maximum."""

    def __init__(self, pids: list[int], interval: float = 0.02):
        super().__init__(daemon=True)
        self.pids, self.interval, self.peak_kb = pids, interval, 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in self.pids))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


# --------------------------------------------------------------------------- HTTP checks
def body_for(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "input": "Say hello", "stream": stream}, separators=(",", ":")).encode()


def post(port: int, path: str, body: bytes, auth: str | None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {auth}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_json(status: int, raw: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {raw[:300]!r}"
    try:
        obj = json.loads(raw)
    except ValueError:
        return f"not JSON: {raw[:300]!r}"
    texts = [
        c.get("text", "")
        for item in obj.get("output", [])
        if item.get("type") == "message"
        for c in item.get("content", [])
        if c.get("type") == "output_text"
    ]
    if "".join(texts) != EXPECTED_TEXT:
        return f"unexpected output text {texts!r}"
    if not (obj.get("usage") or {}).get("output_tokens"):
        return "no usage.output_tokens"
    return None


def check_stream(status: int, raw: bytes) -> tuple[str | None, str]:
    if status != 200:
        return f"HTTP {status}: {raw[:300]!r}", ""
    events, has_event_lines = [], False
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                has_event_lines = True
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                try:
                    events.append(json.loads(data))
                except ValueError:
                    return f"bad SSE data line {data[:200]!r}", ""
    deltas = [e.get("delta", "") for e in events if e.get("type") == "response.output_text.delta"]
    if len(deltas) != N_DELTAS or "".join(deltas) != EXPECTED_TEXT:
        return f"expected {N_DELTAS} output_text.delta events, got {len(deltas)}", ""
    if not events or events[-1].get("type") != "response.completed":
        return f"last event is {events[-1].get('type') if events else None!r}, not response.completed", ""
    note = f"{len(events)} events" + ("" if has_event_lines else ", no `event:` lines")
    return None, note


def verify(port: int, auth: str | None) -> tuple[str | None, str]:
    err = check_json(*post(port, "/v1/responses", body_for(False), auth))
    if err:
        return "non-streaming: " + err, ""
    err, note = check_stream(*post(port, "/v1/responses", body_for(True), auth))
    if err:
        return "streaming: " + err, ""
    return None, note


def wait_ready(port: int, proc: subprocess.Popen, auth: str | None, timeout: float) -> tuple[str | None, str]:
    wait_port(port, proc, timeout)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}:\n{tail(proc._bench_log)}", ""
        try:
            err, note = verify(port, auth)
        except (OSError, urllib.error.URLError) as e:
            err, note = str(e), ""
        if err is None:
            return None, note
        last = err
        time.sleep(0.5)
    return last, ""


# --------------------------------------------------------------------------- wrk
def run_wrk(port: int, stream: bool, conns: int, duration: float, auth: str | None, core: int | None) -> dict:
    env = dict(os.environ, BENCH_PATH="/v1/responses", BENCH_BODY=body_for(stream).decode(), BENCH_AUTH=auth or "")
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH / "wrk" / "post.lua"),
        f"http://127.0.0.1:{port}",
    ]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    raise RuntimeError(f"wrk gave no result (rc {out.returncode}):\n{out.stdout}\n{out.stderr}")


def system_busy_s(cores: set[int]) -> float:
    """user+nice+system time so far of the given CPUs (irq/softirq left out: loopback traffic lands there)."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                total += int(fields[0]) + int(fields[1]) + int(fields[2])
    return total / CLK_TCK


def wait_quiet(cores: set[int], max_wait: float) -> None:
    """Wait (at most max_wait s) until the cores are idle for a second; the measured processes are idle now."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        b0 = system_busy_s(cores) - own_cpu_s()
        time.sleep(1.0)
        if system_busy_s(cores) - own_cpu_s() - b0 < 0.1:
            return


def own_cpu_s() -> float:
    """This script's CPU time plus that of its waited-for children (wrk)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    port: int, pid: int | None, stream: bool, conns: int, duration: float, auth, core, upstream_pid, cores: set[int]
) -> dict:
    """One wrk run against a target. `cores` are the CPUs the measured processes are pinned to."""
    pids = tree(pid) if pid else []
    known = sorted(set(pids) | set(tree(upstream_pid)))
    sampler = RssSampler(pids) if pids else None
    if sampler:
        sampler.start()
    cpu0, known0, busy0, own0 = cpu_seconds(pids), cpu_seconds(known), system_busy_s(cores), own_cpu_s()
    t0 = time.monotonic()
    res = run_wrk(port, stream, conns, duration, auth, core)
    wall = time.monotonic() - t0
    cpu1, known1, busy1, own1 = cpu_seconds(pids), cpu_seconds(known), system_busy_s(cores), own_cpu_s()
    # CPU used meanwhile by processes that are not part of the benchmark, in cores.
    other = max(0.0, (busy1 - busy0) - (known1 - known0) - (own1 - own0)) / wall if wall else 0.0
    n = res["requests"]
    errs = sum(res["errors"].values())
    lat = res["latency_us"]
    cell = {
        "requests": n,
        "rps": n / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "mean_ms": lat["mean"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": errs,
        "error_detail": res["errors"],
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall,
        "other_cpu": other,
    }
    cell["cpu_ms_per_req"] = (cell["cpu_s"] * 1000 / n) if n else None
    cell["cpu_util"] = cell["cpu_s"] / wall if wall else None
    if sampler:
        cell["peak_rss_mb"] = sampler.stop() / 1024
        cell["hwm_mb"] = sum(status_kb(p, "VmHWM") for p in pids) / 1024
    return cell


# --------------------------------------------------------------------------- setup
def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it with `sudo apt-get install wrk` (Debian/Ubuntu)")
    log("installing wrk from Debian's packages (apt-get) ...")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    )


def base_python() -> str:
    """A python to build the LiteLLM venv from (the interpreter behind the current one)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base) if base.exists() else sys.executable


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".bench-installed"
    want = f"litellm[proxy]=={LITELLM_VERSION} uvloop"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return exe
    log(f"creating {LITELLM_VENV.relative_to(ROOT)} with {want} (one-off, a minute or two) ...")
    subprocess.run([base_python(), "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *want.split()], check=True)
    stamp.write_text(want + "\n")
    return exe


def ensure_py_spy() -> str:
    for cand in (shutil.which("py-spy"), str(ROOT / ".venv" / "bin" / "py-spy"), str(LITELLM_VENV / "bin" / "py-spy")):
        if cand and Path(cand).exists():
            return cand
    log("installing py-spy into bench/.venv-litellm ...")
    subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"], check=True)
    return str(LITELLM_VENV / "bin" / "py-spy")


def write_sluice_config(upstream_port: int, routed: bool = False) -> Path:
    """The benchmark's gateway config; `routed`: the model has three routes (three providers in front
    of the same upstream) and every request is sorted by measured time to first token, so the
    live-metric sort, cooldown checks and per-attempt measurements are all on the request path."""
    db = WORK / "sluice-bench.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    cfg = WORK / "sluice.yaml"
    names = ("fake", "fake-b", "fake-c") if routed else ("fake",)
    providers = "".join(f"""
  {name}:
    type: openai            # Responses API upstream
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: sk-fake""" for name in names)
    routes = "".join(f"""
      - provider: {name}
        model: gpt-5.2
        price: {{input: 1.75, cached_input: 0.175, output: 14.0}}""" for name in names)
    cfg.write_text(f"""\
database: sqlite:///{db}
master_key: {MASTER_KEY}
{"routing: {sort: p50_latency}" if routed else ""}
providers:{providers}
models:
  {MODEL}:
    routes:{routes}
""")
    return cfg


def write_litellm_config(upstream_port: int) -> Path:
    cfg = WORK / "litellm.yaml"
    # No database, no callbacks, no spend/error logs, no background health checks:
    # LiteLLM at its fastest. Auth by master key, like Sluice.
    cfg.write_text(f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/gpt-5.2
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-fake
litellm_settings:
  drop_params: true
  set_verbose: false
  telemetry: false
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: {MASTER_KEY}
  disable_spend_logs: true
  disable_error_logs: true
  background_health_checks: false
""")
    return cfg


LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # don't fetch the price map from the internet at start
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_ADMIN_UI": "True",
}


# --------------------------------------------------------------------------- profiling
def profile(py_spy: str, pid: int, port: int, stream: bool, conns: int, duration: float, core, out: Path) -> str:
    """Sample the gateway with py-spy under load; summarise own time, own time by package, inclusive time."""
    raw = WORK / f"py-spy-{'stream' if stream else 'json'}.txt"
    cmd = ["taskset", "-c", str(core), py_spy, "record", "-p", str(pid), "--subprocesses", "--nonblocking"]
    cmd += ["--function", "-r", "400", "-d", str(int(duration)), "-f", "raw", "-o", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res = run_wrk(port, stream, conns, duration, MASTER_KEY, core)
    spy.wait(timeout=60)
    errors = sum(res["errors"].values())
    if errors:
        raise RuntimeError(f"{errors} errors during the profiled run: {res['errors']}")
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    by_pkg: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += k
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + k
        where = leaf.rpartition(" (")[2].rstrip(")")
        pkg = where.split("/")[0] if "/" in where else where.split(":")[0]
        by_pkg[pkg] = by_pkg.get(pkg, 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    if not total:
        raise RuntimeError("py-spy recorded no samples")
    rps = res["requests"] / (res["duration_us"] / 1e6)
    lines = [
        f"# py-spy profile of Sluice, {'streaming' if stream else 'non-streaming'}, c={conns}, {int(duration)} s",
        "",
        f"{total} samples at 400 Hz, idle excluded; {rps:,.0f} req/s while sampled. Own time = the innermost Python",
        "frame, so time in C code and system calls (socket writes, msgspec) counts to the Python function calling it.",
        "",
        "## top 25 functions by own time",
        "",
    ]
    lines += [f"{100 * k / total:6.2f}%  {f}" for f, k in sorted(own.items(), key=lambda kv: -kv[1])[:25]]
    lines += ["", "## own time by package", ""]
    lines += [f"{100 * k / total:6.2f}%  {p}" for p, k in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:12]]
    lines += ["", "## top 40 functions by inclusive time", ""]
    lines += [f"{100 * k / total:6.2f}%  {f}" for f, k in sorted(incl.items(), key=lambda kv: -kv[1])[:40]]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


# --------------------------------------------------------------------------- report
def fmt(v, spec=".2f", dash="-"):
    return dash if v is None else format(v, spec)


def render(results: dict, meta: dict, args) -> str:
    md = []
    md.append("# Sluice benchmark results\n")
    md.append(f"- date: {meta['date']}; machine: {meta['cpu']} x{meta['ncpu']}, Linux {meta['kernel']}")
    md.append(f"- pinning: {meta['pinning']}")
    md.append(
        f"- load: wrk {meta['wrk']}, 1 thread, keep-alive, {args.duration:g} s per cell after a warm-up; "
        '`POST /v1/responses` with `{"model":"bench-model","input":"Say hello","stream":…}`'
    )
    md.append(
        "- upstream: bench/fake_upstream.py (uvloop, precomputed bytes); streaming = 28 Responses SSE events "
        f"with {N_DELTAS} `response.output_text.delta`; latency is for the whole response"
    )
    md.append(
        "- latency added = target minus direct at the same mode and concurrency; CPU = utime+stime of the "
        "gateway's process tree / completed requests; RSS = peak summed VmRSS of the tree while under load"
    )
    if "cross_core_p50_ms" in meta:
        md.append(
            f"- reference: direct non-streaming c=1 with wrk moved to the gateway's core (one cross-core "
            f"round trip, as every gateway call pays twice): p50 {meta['cross_core_p50_ms']:.3f} ms, "
            f"p99 {meta['cross_core_p99_ms']:.3f} ms; part of the added latency below is this hop cost"
        )
    for name, info in meta["targets"].items():
        md.append(f"- {name}: {info}")
    md.append("")
    md.append(
        "| mode | conc | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU ms/req | "
        "peak RSS MB | errors | other load |"
    )
    md.append("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mode in args.modes:
        for c in args.conc:
            base = results.get("direct", {}).get(mode, {}).get(str(c))
            for t in args.targets:
                cell = results.get(t, {}).get(mode, {}).get(str(c))
                if cell is None:
                    continue
                add50 = add99 = None
                if base and t != "direct":
                    add50, add99 = cell["p50_ms"] - base["p50_ms"], cell["p99_ms"] - base["p99_ms"]
                errs = str(cell["errors"]) if cell["errors"] == 0 else f"**{cell['errors']}**"
                other = cell.get("other_cpu", 0.0)
                other_s = f"{other:.2f}" if other <= NOISY_CORES else f"**{other:.2f}**"
                md.append(
                    f"| {'stream' if mode == 'stream' else 'non-stream'} | {c} | {t} | {cell['rps']:,.0f} | "
                    f"{cell['p50_ms']:.3f} | {cell['p99_ms']:.3f} | {fmt(add50, '.3f')} | {fmt(add99, '.3f')} | "
                    f"{fmt(cell.get('cpu_ms_per_req'), '.3f')} | {fmt(cell.get('peak_rss_mb'), '.1f')} | {errs} | "
                    f"{other_s} |"
                )
    md.append("")
    md.append(
        "(For `direct`, CPU and RSS are the fake upstream's own. *other load*: cores used meanwhile by processes "
        f"outside the benchmark; a cell above {NOISY_CORES} was measured again, up to {args.retries} times, and the "
        "quietest attempt is shown; bold = still disturbed, read its req/s and latency with care.)\n"
    )

    s, lt = results.get("sluice"), results.get("litellm")
    if s:
        md.append("## Sluice against the targets (one worker, one core)\n")
        md.append("| target | measured | ok |")
        md.append("|---|---|:-:|")
        if lt:
            ratios = []
            for mode in args.modes:
                for c in args.conc:
                    a, b = s.get(mode, {}).get(str(c)), lt.get(mode, {}).get(str(c))
                    if a and b and b["rps"]:
                        ratios.append((a["rps"] / b["rps"], f"{'stream' if mode == 'stream' else 'json'}@{c}"))
            if ratios:
                lo = min(ratios)
                detail = ", ".join(f"{n} {r:.1f}x" for r, n in ratios)
                md.append(
                    f"| req/s >= {TARGET_RPS_RATIO:g}x LiteLLM | worst {lo[0]:.1f}x ({detail}) | "
                    f"{'yes' if lo[0] >= TARGET_RPS_RATIO else 'NO'} |"
                )
        d = results.get("direct", {})
        for mode in args.modes:
            a, b = s.get(mode, {}).get("1"), d.get(mode, {}).get("1")
            if a and b:
                add50, add99 = a["p50_ms"] - b["p50_ms"], a["p99_ms"] - b["p99_ms"]
                md.append(
                    f"| added p50 <= {TARGET_ADDED_P50_MS} ms @ c=1 ({mode}) | {add50:.3f} ms | "
                    f"{'yes' if add50 <= TARGET_ADDED_P50_MS else 'NO'} |"
                )
                md.append(
                    f"| added p99 <= {TARGET_ADDED_P99_MS} ms @ c=1 ({mode}) | {add99:.3f} ms | "
                    f"{'yes' if add99 <= TARGET_ADDED_P99_MS else 'NO'} |"
                )
        for mode in args.modes:
            cells = [(v["cpu_ms_per_req"], k) for k, v in s.get(mode, {}).items() if v.get("cpu_ms_per_req")]
            if cells:
                worst = max(cells)
                detail = ", ".join(f"c={k} {v:.3f}" for v, k in sorted(cells, key=lambda x: int(x[1])))
                md.append(
                    f"| CPU <= {TARGET_CPU_MS[mode]} ms/req ({mode}) | worst {worst[0]:.3f} ms ({detail}) | "
                    f"{'yes' if worst[0] <= TARGET_CPU_MS[mode] else 'NO'} |"
                )
        peak = max((v.get("peak_rss_mb") or 0) for m in s.values() for v in m.values())
        md.append(
            f"| RSS <= {TARGET_RSS_MB:g} MB under load | {peak:.1f} MB | {'yes' if peak <= TARGET_RSS_MB else 'NO'} |"
        )
        errs = sum(v["errors"] for m in s.values() for v in m.values())
        md.append(f"| no errors | {errs} | {'yes' if errs == 0 else 'NO'} |")
        md.append("")
    for name, why in meta.get("skipped", {}).items():
        md.append(f"- **{name} not measured**: {why}")
    return "\n".join(md) + "\n"


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=6, help="seconds per cell (default 6)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target and mode (default 2)")
    ap.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    ap.add_argument("--targets", type=lambda s: s.split(","), default=["direct", "sluice", "sluice-routed", "litellm"])
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["json", "stream"])
    ap.add_argument("--sluice", default=str(ROOT / ".venv" / "bin" / "sluice"), help="sluice executable")
    ap.add_argument("--python", default=None, help="python for the fake upstream (default: the project's venv)")
    ap.add_argument("--gateway-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1, help="core for wrk and the fake upstream")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile Sluice with py-spy (non-streaming and streaming, c=64) into bench/profile-*.txt",
    )
    ap.add_argument(
        "--retries", type=int, default=2, help="re-measurements of a cell disturbed by other processes (default 2)"
    )
    ap.add_argument("--out", default=str(BENCH / "results.md"))
    args = ap.parse_args()
    for t in args.targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r}")
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")  # needed for added latency

    ncpu = len(os.sched_getaffinity(0))
    if ncpu < 2 or args.gateway_core == args.load_core:
        log("warning: fewer than 2 cores: gateway, wrk and upstream share a core")
        args.load_core = args.gateway_core
    gw_core, ld_core = args.gateway_core, args.load_core

    WORK.mkdir(exist_ok=True)
    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_wrk()
    litellm_exe = ensure_litellm() if "litellm" in args.targets else None
    py_spy = ensure_py_spy() if args.profile else None
    upstream_py = args.python or (
        str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
    )

    wrk_ver = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].split(" [")[0]
    cpu_model = "?"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu_model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model,
        "ncpu": ncpu,
        "kernel": os.uname().release,
        "wrk": wrk_ver.replace("wrk ", ""),
        "pinning": f"gateway on core {gw_core}; wrk and the fake upstream on core {ld_core} (taskset)",
        "targets": {},
        "skipped": {},
    }
    log(f"pinning: {meta['pinning']}")

    up_port = free_port()
    upstream = start(
        [upstream_py, str(BENCH / "fake_upstream.py"), "--port", str(up_port)], ld_core, WORK / "upstream.log"
    )
    wait_port(up_port, upstream, 15)
    meta["targets"]["direct"] = f"fake upstream on 127.0.0.1:{up_port} ({Path(upstream_py).name}, uvloop)"

    results: dict = {}
    profiles: dict[str, str] = {}

    def bench_target(name: str, port: int, pid: int, auth: str | None):
        res = results.setdefault(name, {})
        for mode in args.modes:
            stream = mode == "stream"
            run_wrk(port, stream, 16, args.warmup, auth, ld_core)  # warm-up
            for c in args.conc:
                best = None
                for attempt in range(1 + args.retries):
                    cores = {ld_core} if name == "direct" else {ld_core, gw_core}
                    cell = measure(port, pid, stream, c, args.duration, auth, ld_core, upstream.pid, cores)
                    cell["attempts"] = attempt + 1
                    if best is None or cell["other_cpu"] < best["other_cpu"]:
                        best = cell
                    log(
                        f"  {name:8s} {mode:6s} c={c:<3d} {cell['rps']:10,.0f} req/s  p50 {cell['p50_ms']:8.3f} ms  "
                        f"p99 {cell['p99_ms']:8.3f} ms  cpu {fmt(cell['cpu_ms_per_req'], '.3f')} ms/req  "
                        f"rss {fmt(cell.get('peak_rss_mb'), '.1f')} MB  errors {cell['errors']}  "
                        f"other load {cell['other_cpu']:.2f} cores"
                    )
                    if cell["other_cpu"] <= NOISY_CORES:
                        break
                    if attempt < args.retries:
                        log(f"    other processes used {cell['other_cpu']:.2f} cores meanwhile: measuring again")
                        wait_quiet(cores, 30)
                res.setdefault(mode, {})[str(c)] = best

    for name in args.targets:
        log(f"== {TARGETS[name]}")
        proc = None
        try:
            if name == "direct":
                err, note = verify(up_port, None)
                if err:
                    raise RuntimeError(f"fake upstream answers wrongly: {err}")
                bench_target("direct", up_port, upstream.pid, None)
                if gw_core != ld_core:
                    # Reference only: the same c=1 call with wrk on the gateway's core, i.e. the price of
                    # the cross-core loopback hops a gateway in the path cannot avoid.
                    x = run_wrk(up_port, False, 1, min(3, args.duration), None, gw_core)
                    meta["cross_core_p50_ms"] = x["latency_us"]["p50"] / 1000
                    meta["cross_core_p99_ms"] = x["latency_us"]["p99"] / 1000
                    log(
                        f"  direct, wrk on core {gw_core} (cross-core reference): "
                        f"p50 {meta['cross_core_p50_ms']:.3f} ms  p99 {meta['cross_core_p99_ms']:.3f} ms"
                    )
                continue
            port = free_port()
            if name in ("sluice", "sluice-routed"):
                if not Path(args.sluice).exists():
                    meta["skipped"][name] = f"{args.sluice} not found"
                    log("  skipped: " + meta["skipped"][name])
                    continue
                cfg = write_sluice_config(up_port, routed=name == "sluice-routed")
                cmd = [
                    args.sluice,
                    "serve",
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ]
                proc = start(cmd, gw_core, WORK / "sluice.log", cwd=WORK)
                ver = subprocess.run(
                    ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
                ).stdout.strip()
                meta["targets"][name] = (
                    f"`{' '.join(shlex.quote(c) for c in cmd[:2])} … --workers 1` (git {ver or 'uncommitted'})"
                    + ("; three routes, `routing.sort: p50_latency`" if name == "sluice-routed" else "")
                )
            else:
                cfg = write_litellm_config(up_port)
                cmd = [
                    str(litellm_exe),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                ]
                proc = start(cmd, gw_core, WORK / "litellm.log", env=dict(os.environ, **LITELLM_ENV), cwd=WORK)
                meta["targets"]["litellm"] = (
                    f"litellm[proxy]=={LITELLM_VERSION}, `litellm --num_workers 1`, uvloop, no DB, "
                    "no callbacks, spend/error logs off, `/v1/responses` (native OpenAI Responses pass-through)"
                )
            err, note = wait_ready(port, proc, MASTER_KEY, 90 if name == "litellm" else 45)
            if err:
                meta["skipped"][name] = f"does not answer `POST /v1/responses` correctly: {err}"
                log("  skipped: " + meta["skipped"][name])
                continue
            if note:
                meta["targets"][name] += f"; stream: {note}"
            bench_target(name, port, proc.pid, MASTER_KEY)
            if name == "sluice" and py_spy:
                for mode in args.modes:
                    log(f"  profiling sluice ({mode}) with py-spy ...")
                    out = BENCH / f"profile-sluice-{mode}.txt"
                    try:
                        profiles[mode] = profile(
                            py_spy, proc.pid, port, mode == "stream", 64, max(10, args.duration), ld_core, out
                        )
                    except Exception as e:
                        log(f"  profiling failed: {e}")
        except Exception as e:  # keep going with the other targets
            meta["skipped"][name] = str(e)
            log(f"  failed: {e}")
        finally:
            if proc is not None:
                stop(proc)

    stop(upstream)
    report = render(results, meta, args)
    Path(args.out).write_text(report)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    log("")
    log(report)
    for text in profiles.values():
        log(text)
    log(f"written: {Path(args.out).relative_to(ROOT) if Path(args.out).is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
