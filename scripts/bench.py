#!/usr/bin/env python3
"""Runs one chat-bench scenario against the real system and/or chat-baseline, each freshly started on
free loopback ports, and prints the ratios.

    .venv/bin/python scripts/bench.py [--bin-dir .build-bench/release] [--target both|system|baseline]
                                      [--out artifacts/bench] SCENARIO [chat-bench options...]

The system is nats-server -js + chat-service + broadcaster + gateway, started by the shared test
launcher (tests/python/system.py) from the release binaries in --bin-dir, with LOG_LEVEL=warning and
the per-connection rate limit raised (RATE_LIMIT_PER_SEC/BURST=100000, so senders are limited by the
scenario, not the gateway). chat-bench gets every process's PID (--pid) so it reports their CPU and
RSS per phase. JSON results go to --out/<scenario>-<target>.json. Build first:

    swift build -c release --scratch-path .build-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from system import Process, System, free_port, http_get  # noqa: E402

BENCH_GATEWAY_ENV = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}


class Baseline(Process):
    kind = "chat-baseline"

    def __init__(self, system: System, binary: Path):
        self.port = free_port()
        super().__init__(system, "chat-baseline", [str(binary), "--port", str(self.port)], dict(os.environ))

    def probe(self) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.port}/health", timeout=1)[0] == 200
        except OSError:
            return False


def raise_file_limit(wanted: int = 200_000) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (wanted, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))
            return
        except (ValueError, OSError):
            continue


def run(bin_dir: Path, target: str, scenario: str, extra: list[str], out: Path) -> dict | None:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    system = System(workdir)
    processes: list[tuple[str, int]] = []
    baseline = None
    try:
        if target == "system":
            os.environ.setdefault("LOG_LEVEL", "warning")
            for name, variable in (("chat-service", "CHAT_SERVICE_BIN"), ("broadcaster", "BROADCASTER_BIN"), ("gateway", "GATEWAY_BIN")):
                os.environ[variable] = str(bin_dir / name)
            system.start(gateway_env=BENCH_GATEWAY_ENV)
            url, api = system.gateway.ws_url(), system.gateway.base_url
            processes = [("gateway", system.gateway.pid), ("chat-service", system.chat_service.pid),
                         ("broadcaster", system.broadcaster.pid), ("nats-server", system.nats.pid)]
        else:
            baseline = Baseline(system, bin_dir / "chat-baseline")
            baseline.start().wait_ready()
            url, api = f"ws://127.0.0.1:{baseline.port}/ws", f"http://127.0.0.1:{baseline.port}"
            processes = [("baseline", baseline.pid)]
        label = "nats-chat" if target == "system" else "baseline"
        report = out / f"{scenario}-{target}.json"
        argv = [str(bin_dir / "chat-bench"), scenario, "--url", url, "--api", api, "--label", label, "--json", str(report)]
        for name, pid in processes:
            argv += ["--pid", f"{name}={pid}"]
        # The process holding the sockets (RSS per connection): the gateway, or the baseline itself.
        argv += ["--gateway-pid", str(processes[0][1])]
        argv += extra
        print(f"\n=== {scenario} against {label}: {' '.join(argv)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(argv, cwd=ROOT)
        print(f"=== chat-bench exited {code} after {time.monotonic() - started:.0f} s", flush=True)
        for process in system.processes + ([baseline] if baseline else []):
            if not process.running:
                print(f"!!! {process.name} is no longer running:\n{process.tail()}")
        return json.loads(report.read_text()) if report.exists() else None
    finally:
        if baseline is not None:
            baseline.stop()
        system.stop()


def ratios(system: dict, baseline: dict) -> None:
    print("\nnats-chat / baseline:")
    pairs = list(zip(system.get("phases", []), baseline.get("phases", [])))
    for a, b in pairs:
        def r(x: float, y: float) -> str:
            return f"{x / y:.2f}" if y else "-"
        print(f"  {a['label']:<28} deliveries/s {r(a['deliveredPerSecond'], b['deliveredPerSecond'])}  "
              f"p50 {r(a['latency']['p50'], b['latency']['p50'])}  p99 {r(a['latency']['p99'], b['latency']['p99'])}")
    if system.get("best") and baseline.get("best"):
        print(f"  best fan-out step: {system['best']['deliveredPerSecond']:.0f} vs {baseline['best']['deliveredPerSecond']:.0f} "
              f"deliveries/s = {system['best']['deliveredPerSecond'] / baseline['best']['deliveredPerSecond']:.2f}")
    if system.get("connections") and baseline.get("connections"):
        a, b = system["connections"], baseline["connections"]
        print(f"  connects/s {a['connectsPerSecond']:.0f} vs {b['connectsPerSecond']:.0f}; "
              f"KiB/connection {a.get('gatewayKiBPerConnection') or 0:.1f} vs {b.get('gatewayKiBPerConnection') or 0:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(ROOT / ".build-bench" / "release"))
    parser.add_argument("--target", choices=["both", "system", "baseline"], default="both")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench"))
    parser.add_argument("scenario")
    args, extra = parser.parse_known_args()
    bin_dir = Path(args.bin_dir).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raise_file_limit()
    results = {}
    targets = ["system", "baseline"] if args.target == "both" else [args.target]
    for target in targets:
        results[target] = run(bin_dir, target, args.scenario, extra, out)
    if results.get("system") and results.get("baseline"):
        ratios(results["system"], results["baseline"])
    return 0 if all(r is not None and r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
