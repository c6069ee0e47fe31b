#!/usr/bin/env python3
"""Runs one chat-bench scenario against the real system and/or chat-baseline, each freshly started on
free loopback ports, and prints the ratios.

    .venv/bin/python scripts/bench.py [--bin-dir Benchmarks/.build-bench/release] [--system-bin-dir DIR]
                                      [--target both|system|baseline] [--out artifacts/bench]
                                      SCENARIO [chat-bench options...]

The system is nats-server -js + chat-service + broadcaster + gateway, started by the shared test
launcher (e2e/python/system.py) from the release binaries in --system-bin-dir (default: --bin-dir),
with LOG_LEVEL=warning and the per-connection rate limit raised (RATE_LIMIT_PER_SEC/BURST=100000, so
senders are limited by the scenario, not the gateway; the per-user and per-address rates follow it) and
the per-address connection and room-creation limits off (every bench client is local); chat-bench and chat-baseline come from
--bin-dir. chat-bench gets every process's PID (--pid) so it reports their CPU and RSS per phase.
JSON results go to --out/<scenario>-<target>.json. Build first (the Benchmarks package, which also
builds the three executables of the root package it depends on, into one directory):

    for product in chat-bench chat-baseline gateway chat-service broadcaster; do
        swift build -c release --package-path Benchmarks --scratch-path Benchmarks/.build-bench --product $product
    done
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "e2e" / "python"))

from system import Process, System, free_port, http_get  # noqa: E402

BENCH_GATEWAY_ENV = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000",
                     "MAX_CONNECTIONS_PER_IP": "0", "ROOM_CREATE_PER_MIN": "1000000"}


class Baseline(Process):
    kind = "chat-baseline"

    def __init__(self, system: System, binary: Path, extra: list[str] | None = None):
        self.port = free_port()
        super().__init__(system, "chat-baseline", [str(binary), "--port", str(self.port), *(extra or [])], dict(os.environ))

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


def machine_busy(seconds: float = 3.0) -> float:
    """Percent of all cores busy over `seconds` (from /proc/stat; 200 = both cores of this machine)."""
    def sample() -> tuple[float, float]:
        values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)
    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return (busy1 - busy0) / max(total1 - total0, 1) * 100 * cores


SYSTEM_PROCESS_NAMES = {"nats-server", "gateway", "chat-service", "broadcaster", "chat-baseline", "chat-bench"}


def leftover_processes() -> list[str]:
    """Processes of this system already running (a leftover test or benchmark system, a `scripts/start`):
    they share the two cores with the run and skew every number, which `--quiet-wait` cannot see when
    they are idle (19,000 idle sockets still cost pings and memory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name in SYSTEM_PROCESS_NAMES:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"{entry.name} {argv[:160]}")
        except OSError:
            continue
    return sorted(found)


def wait_for_quiet(limit: float, threshold: float = 30.0) -> None:
    """Waits up to `limit` seconds for other work on the machine to calm down (shared machines)."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy()
        if busy < threshold or time.monotonic() > deadline:
            print(f"=== machine busy {busy:.0f}% (of {100 * (os.cpu_count() or 1)}%) before the run", flush=True)
            return


def run(bin_dir: Path, system_bin_dir: Path, target: str, scenario: str, extra: list[str], out: Path, perf: str | None = None, quiet_wait: float = 0, direct_writes: bool = False) -> dict | None:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    system = System(workdir)
    processes: list[tuple[str, int]] = []
    baseline = None
    try:
        if target == "system":
            os.environ.setdefault("LOG_LEVEL", "warning")
            for name, variable in (("chat-service", "CHAT_SERVICE_BIN"), ("broadcaster", "BROADCASTER_BIN"), ("gateway", "GATEWAY_BIN")):
                os.environ[variable] = str(system_bin_dir / name)
            system.start(gateway_env=BENCH_GATEWAY_ENV)
            url, api = system.gateway.ws_url(), system.gateway.base_url
            processes = [("gateway", system.gateway.pid), ("chat-service", system.chat_service.pid),
                         ("broadcaster", system.broadcaster.pid), ("nats-server", system.nats.pid)]
        else:
            baseline = Baseline(system, bin_dir / "chat-baseline", ["--direct-writes"] if direct_writes else [])
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
        if quiet_wait:
            wait_for_quiet(quiet_wait)
        print(f"\n=== {scenario} against {label}: {' '.join(argv)}", flush=True)
        started = time.monotonic()
        recorder = None
        profiled = dict(processes).get(perf) if perf else None
        if profiled:
            data = out / f"perf-{scenario}-{perf}.data"
            # PERF_CALL_GRAPH=dwarf: callers through Swift frames (the default frame-pointer graphs break there).
            graph = ["--call-graph", "dwarf,16384", "-F", "199"] if os.environ.get("PERF_CALL_GRAPH") == "dwarf" else ["-F", "499", "-g"]
            recorder = subprocess.Popen(["perf", "record", *graph, "-o", str(data), "-p", str(profiled)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        code = subprocess.call(argv, cwd=ROOT)
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
            text = out / f"perf-{scenario}-{perf}.txt"
            with text.open("w") as report_file:
                subprocess.call(["perf", "report", "-i", str(data), "--no-children", "--percent-limit", "0.7", "--stdio",
                                 "-g", "none", "--sort", "dso,symbol"], stdout=report_file, stderr=subprocess.DEVNULL)
            print(f"=== perf profile of {perf}: {text} (flat, self time)")
        print(f"=== chat-bench exited {code} after {time.monotonic() - started:.0f} s", flush=True)
        for process in system.processes + ([baseline] if baseline else []):
            if not process.running:
                print(f"!!! {process.name} is no longer running:\n{process.tail()}")
        return json.loads(report.read_text()) if report.exists() else None
    finally:
        if baseline is not None:
            baseline.stop()
        system.stop()
        # The JetStream store of a history or fan-out run is gigabytes; runs used to leave it behind
        # until the disk filled. BENCH_KEEP_WORKDIR=1 keeps it (and the process logs) for inspection.
        if os.environ.get("BENCH_KEEP_WORKDIR") == "1":
            print(f"=== kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


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
    parser.add_argument("--bin-dir", default=str(ROOT / "Benchmarks" / ".build-bench" / "release"),
                        help="directory with chat-bench and chat-baseline [%(default)s]")
    parser.add_argument("--system-bin-dir", help="directory with gateway, chat-service and broadcaster [--bin-dir]")
    parser.add_argument("--target", choices=["both", "system", "baseline"], default="both")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench"))
    parser.add_argument("--perf", metavar="PROCESS", help="perf record this process (gateway, chat-service, "
                        "broadcaster, nats-server, baseline) during the run; flat profile in --out")
    parser.add_argument("--quiet-wait", type=float, default=0, metavar="SECONDS",
                        help="before each run wait up to this long for the machine to be under 30%% busy")
    parser.add_argument("--baseline-direct-writes", action="store_true",
                        help="run chat-baseline with --direct-writes (frames written straight to the channel)")
    parser.add_argument("--allow-others", action="store_true",
                        help="run even when other nats-chat/nats-server processes are running")
    parser.add_argument("scenario")
    args, extra = parser.parse_known_args()
    others = leftover_processes()
    if others:
        print("=== other processes of this system are running:\n    " + "\n    ".join(others), flush=True)
        if not args.allow_others:
            print("=== stop them (kill the PIDs above, or scripts/stop) or pass --allow-others", file=sys.stderr)
            return 2
    bin_dir = Path(args.bin_dir).resolve()
    system_bin_dir = Path(args.system_bin_dir).resolve() if args.system_bin_dir else bin_dir
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raise_file_limit()
    results = {}
    targets = ["system", "baseline"] if args.target == "both" else [args.target]
    for target in targets:
        results[target] = run(bin_dir, system_bin_dir, target, args.scenario, extra, out, args.perf, args.quiet_wait, args.baseline_direct_writes)
    if results.get("system") and results.get("baseline"):
        ratios(results["system"], results["baseline"])
    return 0 if all(r is not None and r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
