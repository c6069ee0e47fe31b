"""Smoke runs of chat-bench (issue 8): a few seconds, small numbers, zero loss required.

chat-bench speaks only the public WebSocket protocol, so the same smoke run goes against the real
system (nats-server + chat-service + broadcaster + gateway, started by ``system.py``) and against the
in-memory ``chat-baseline``. chat-bench itself exits non-zero on any loss, duplicate, reordering,
error frame or unexpected close; the tests also read its ``--json`` report and check the counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from system import REPO_ROOT, Process, System, free_port, http_get, resolve_binary

SMOKE_TIMEOUT = 120


def binary(name: str) -> Path:
    """chat-bench or chat-baseline: CHAT_BENCH_BIN / CHAT_BASELINE_BIN, else the Benchmarks package's debug build."""
    path = resolve_binary(os.environ.get(f"{name.upper().replace('-', '_')}_BIN", f"Benchmarks/.build/debug/{name}"))
    deadline = time.monotonic() + 60  # a concurrent `swift build` may be relinking it
    while not (path.is_file() and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.fail(f"{path} not found: run `swift build --package-path Benchmarks` first")
        time.sleep(0.5)
    return path


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    report = tmp_path / f"bench-{time.monotonic_ns()}.json"
    process = subprocess.run(
        [str(binary("chat-bench")), *args, "--json", str(report), "--deadline", "90"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return process, data


def assert_clean_smoke(process: subprocess.CompletedProcess[str], report: dict | None, members: int) -> None:
    output = f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    assert process.returncode == 0, output
    assert "result: OK" in process.stdout, output
    assert report is not None and report["ok"], output
    [phase] = report["phases"]
    checks = phase["checks"]
    assert checks == {"missing": 0, "duplicates": 0, "reordered": 0, "stale": 0, "foreignRoom": 0,
                      "unexpectedCloses": 0, "unacked": 0}, output
    assert phase["errors"] == {}, output
    assert phase["sent"] >= 40, output  # 2 rooms x 10 msgs/s x 3 s, give or take a tick
    assert phase["acks"] == phase["sent"], output
    # Every message reaches every member of its room, the sender included.
    assert phase["delivered"] == phase["sent"] * members, output
    assert phase["latency"]["count"] == phase["delivered"], output


class Baseline(Process):
    kind = "chat-baseline"

    def __init__(self, system: System, *args: str):
        self.port = free_port()
        super().__init__(system, "chat-baseline", [str(binary("chat-baseline")), "--port", str(self.port), *args], dict(os.environ))

    def probe(self) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.port}/health", timeout=1)[0] == 200
        except OSError:
            return False


def test_smoke_against_the_system(make_system, tmp_path):
    system = make_system()
    gateway = system.gateway
    process, report = run_bench(
        tmp_path, "smoke", "--url", gateway.ws_url(), "--api", gateway.base_url, "--label", "nats-chat",
        "--gateway-pid", str(gateway.pid),
    )
    assert_clean_smoke(process, report, members=5)
    assert [p["name"] for p in report["phases"][0]["processes"]] == ["gateway", "chat-bench", "machine"]
    gateway.assert_running()


@pytest.mark.parametrize("mode", [[], ["--direct-writes"]], ids=["writer-task", "direct-writes"])
def test_smoke_against_the_baseline(tmp_path, mode):
    system = System(tmp_path / "baseline")
    baseline = Baseline(system, *mode)
    try:
        baseline.start().wait_ready()
        process, report = run_bench(tmp_path, "smoke", "--url", f"ws://127.0.0.1:{baseline.port}/ws", "--label", "baseline")
        assert_clean_smoke(process, report, members=5)
        baseline.assert_running()
    finally:
        system.stop()
        baseline.stop()


@pytest.mark.parametrize("limit, held", [("1000", True), ("0.0001", False)], ids=["generous-limit", "impossible-limit"])
def test_send_reports_the_highest_fixed_rate_that_held(tmp_path, limit, held):
    """The send scenario marks each fixed rate held or not (ack p99 within --p99-limit-ms, the rate
    answered, nothing lost) and reports the highest one that held: the issue's send target in one line."""
    system = System(tmp_path / "baseline")
    baseline = Baseline(system)
    try:
        baseline.start().wait_ready()
        process, report = run_bench(tmp_path, "send", "--url", f"ws://127.0.0.1:{baseline.port}/ws", "--label", "baseline",
                                    "--connections", "4", "--window", "2", "--rates", "40,80", "--duration", "1",
                                    "--p99-limit-ms", limit)
        baseline.assert_running()
    finally:
        system.stop()
        baseline.stop()
    output = f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    assert process.returncode == 0, output
    assert report is not None and report["ok"], output
    saturation, *fixed = report["phases"]
    assert saturation.get("held") is None, output  # closed loop: no rate to hold
    assert [p["label"] for p in fixed] == ["send 40/s", "send 80/s"], output
    assert [p["held"] for p in fixed] == [held, held], output
    for p in fixed:
        assert p["acks"] == p["sent"] and sum(p["checks"].values()) == 0, output
    if held:
        assert report["best"]["label"] == "send 80/s", output
        assert "send: highest fixed rate that held (ack p99 ≤ 1000 ms" in process.stdout, output
    else:
        assert report.get("best") is None, output
        assert "send: no fixed rate held (p99 ≤ 0.0001 ms)" in process.stdout, output


def test_chat_bench_fails_when_the_server_is_unreachable(tmp_path):
    port = free_port()  # nothing listens there
    process, report = run_bench(tmp_path, "smoke", "--url", f"ws://127.0.0.1:{port}/ws")
    assert process.returncode != 0, process.stdout + process.stderr
    assert report is None


def test_usage_errors_exit_2():
    process = subprocess.run([str(binary("chat-bench")), "no-such-scenario"], capture_output=True, text=True, timeout=30)
    assert process.returncode == 2
    assert "usage: chat-bench" in process.stderr


# --- chat-bench's own checks, against a fake server that misbehaves on purpose ------------------------------

@pytest.mark.parametrize("fault, check", [("none", None), ("drop", "missing"), ("dup", "duplicates"), ("reorder", "reordered")])
def test_chat_bench_detects_loss_duplicates_and_reordering(tmp_path, fault, check):
    """faulty_chat.py delivers every message to every member in seq order, except that one receiver
    misses seq 3, gets seq 2 twice, or gets 5 before 4; chat-bench must find exactly that."""
    ws_port, rest_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faulty_chat.py")), fault, str(ws_port), str(rest_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        process, report = run_bench(tmp_path, "smoke", "--url", f"ws://127.0.0.1:{ws_port}/ws",
                                    "--api", f"http://127.0.0.1:{rest_port}", "--drain-seconds", "2")
    finally:
        server.kill()
        server.wait(timeout=10)
    output = process.stdout + process.stderr
    assert report is not None, output
    checks = report["phases"][0]["checks"]
    if check is None:
        assert process.returncode == 0, output
        assert sum(checks.values()) == 0, output
    else:
        assert process.returncode == 1, output
        assert "result: FAILED" in process.stdout, output
        assert checks[check] == 1, checks
        assert sum(v for k, v in checks.items() if k != check) == 0, checks
