"""Peak memory and event-loop stalls of a gateway fed large JSON bodies.

    python3 bench/memory_limits.py                 # ~30 MB bodies, about a minute
    python3 bench/memory_limits.py --mb 10         # smaller bodies
    python3 bench/memory_limits.py --src /path/to/other/checkout/src   # measure another version

Starts `sluice serve` (one worker, no provider: a body that is parsed is then refused with 404
for its unknown model, so what is measured is reading and parsing only). For each body shape it
sends the body (once, or N at once), while one thread samples the server's resident memory
(VmRSS, every 2 ms) and another asks `GET /health` every 10 ms on its own connection. It prints
per shape: the answer, peak RSS above the idle baseline (MB and as a multiple of the total body
bytes in flight), RSS left 1 s after, and the slowest /health answer during the request.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

MASTER = "sk-bench-limits"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def repeat(prefix: bytes, element: bytes, suffix: bytes, size: int) -> bytes:
    count = max(1, (size - len(prefix) - len(suffix)) // (len(element) + 1))
    return prefix + b",".join([element] * count) + suffix


def shapes(size: int) -> dict[str, Callable[[], bytes]]:
    extra = b'{"model":"no-such-model","input":[{"role":"user","content":"hi","extra":['
    tail = b"]}]}"
    code = b"def f(x):\\n    return [x, {x: 1}]\\n" * 40
    item = (b'{"type":"function_call","call_id":"call_1","name":"read_file","arguments":"{\\"path\\":\\"a.py\\"}"},'
            b'{"type":"function_call_output","call_id":"call_1","output":"' + code + b'"}')
    items = max(1, min(5000, size // len(item)))
    return {
        "30 MB of {} (the issue's case)": lambda: repeat(extra, b"{}", tail, size),
        "[] values": lambda: repeat(extra, b"[]", tail, size),
        '{"a":1} values': lambda: repeat(extra, b'{"a":1}', tail, size),
        "strings of 10 chars": lambda: repeat(extra, b'"abcdefghij"', tail, size),
        "strings of 20 chars": lambda: repeat(extra, b'"abcdefghijklmnopqrst"', tail, size),
        "objects of 70 bytes": lambda: repeat(extra, b'{"key":"' + b"x" * 60 + b'"}', tail, size),
        "one long text": lambda: (
            b'{"model":"no-such-model","input":"' + b"All work and no play. " * (size // 22) + b'"}'),
        f"agent session ({2 * items} items, code outputs)": lambda: (
            b'{"model":"no-such-model","input":[' + b",".join([item] * items) + b"]}"),
        "nested 100,000 deep": lambda: b'{"model":"no-such-model","input":"x","tools":[' + b"[" * 100_000 +
                                       b"]" * 100_000 + b"]}",
    }


class Sampler(threading.Thread):
    """Peak RSS of `pid` and the slowest /health answer while running."""

    def __init__(self, pid: int, port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.peak = 0
        self.worst_health = 0.0
        self.stop = threading.Event()
        self._health = threading.Thread(target=self._poll_health, daemon=True)

    def run(self) -> None:
        self._health.start()
        while not self.stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.002)
        self._health.join()

    def _poll_health(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            self.worst_health = max(self.worst_health, time.perf_counter() - started)
            time.sleep(0.01)
        conn.close()


def post(port: int, body: bytes, out: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/responses", body=body, headers={
        "authorization": f"Bearer {MASTER}", "content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    out.append(response.status)
    conn.close()


def measure(pid: int, port: int, body: bytes, concurrency: int) -> tuple[list[int], int, int, float]:
    time.sleep(0.5)
    base = rss(pid)
    sampler = Sampler(pid, port)
    sampler.start()
    statuses: list[int] = []
    senders = [threading.Thread(target=post, args=(port, body, statuses)) for _ in range(concurrency)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    sampler.stop.set()
    sampler.join()
    time.sleep(1)
    return statuses, sampler.peak - base, rss(pid) - base, sampler.worst_health


class Gateway:
    """`sluice serve` on a free port, one worker, until the block ends."""

    def __init__(self, src: Path, tmp: str) -> None:
        self.port = free_port()
        config = Path(tmp) / "sluice.yaml"
        config.write_text(f"database: sqlite:///{tmp}/sluice.db\nmaster_key: {MASTER}\nbuiltin_catalog: false\n"
                          "server: {max_body_bytes: 67108864, log_level: warning}\n")
        self.proc = subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--config", str(config), "--port",
                                      str(self.port)], env={**os.environ, "PYTHONPATH": str(src)},
                                     stderr=subprocess.DEVNULL)

    def __enter__(self) -> Gateway:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the gateway did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=30, help="body size in MB (default 30)")
    parser.add_argument("--concurrency", type=int, default=4, help="also send the first shape N at once")
    parser.add_argument("--src", help="the src/ directory of the Sluice to measure (default: this checkout)")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    src = Path(args.src or Path(__file__).resolve().parent.parent / "src").resolve()
    print(f"Sluice from {src}, Python {sys.version.split()[0]}, bodies of ~{args.mb:g} MB, a fresh gateway per row\n")
    print("| body | sent | answers | peak RSS over idle | x in flight | RSS 1 s after | slowest /health |")
    print("|---|---|---|---|---|---|---|")
    runs = [(name, make, 1) for name, make in shapes(size).items()]
    first_name, first_make, _ = runs[0]
    runs.insert(1, (first_name, first_make, args.concurrency))
    for name, make, concurrency in runs:
        body = make()
        with tempfile.TemporaryDirectory() as tmp, Gateway(src, tmp) as gateway:
            post(gateway.port, b"{}", [])  # warm up: first request's imports and allocations
            statuses, peak, after, health = measure(gateway.proc.pid, gateway.port, body, concurrency)
        answers = ", ".join(f"{statuses.count(s)} x {s}" if concurrency > 1 else str(s) for s in sorted(set(statuses)))
        print(f"| {name} | {concurrency} x {len(body) / 1e6:.1f} MB | {answers} | {peak / 1e6:.0f} MB | "
              f"{peak / (len(body) * concurrency):.1f} | {after / 1e6:.0f} MB | {health * 1000:.0f} ms |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
