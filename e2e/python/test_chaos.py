"""The short chaos run of issue 9 in the test suite: `scripts/chaos` for 75 s with a fault every ~3 s
(kill -9 and restart of a gateway, a chat-service, a broadcaster, nats-server; client connections
dropped), then its checker. The test asserts the verdict and that the run was not trivial: enough
messages acknowledged and delivered, every fault kind injected several times, clients reconnected.

The seed is random unless CHAOS_SEED is set; it is printed (with the checker's counts) so a failing run
can be replayed with `scripts/chaos --seed N --duration 75 --fault-interval 3`."""

from __future__ import annotations

import json
import os
import random
import subprocess

from system import REPO_ROOT

DURATION = 75
FAULT_INTERVAL = 3.0


def test_short_chaos_run_passes(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 1_000_000))
    out = tmp_path / "chaos.json"
    command = [str(REPO_ROOT / "scripts/chaos"), "--duration", str(DURATION), "--fault-interval", str(FAULT_INTERVAL),
               "--seed", str(seed), "--clients", "16", "--rooms", "4", "--json", str(out),
               "--keep-logs", str(tmp_path / "logs")]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DURATION + 150, check=False)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert out.exists(), f"scripts/chaos wrote no result (exit {run.returncode})"
    result = json.loads(out.read_text())
    counts = result.get("counts", {})
    assert result["pass"] and run.returncode == 0, (
        f"chaos run with seed {seed} failed: {result.get('bad') or result.get('error')}; "
        f"problems: {result.get('problems')}; logs in {tmp_path / 'logs'}")
    # Not trivial: traffic flowed and every kind of fault happened several times.
    assert counts["acked"] >= 2000, counts
    assert counts["acked_stored_exactly_once"] == counts["acked"] == counts["stored_messages"]
    assert counts["member_rooms_exact"] == counts["member_rooms"] == 32
    assert counts["deliveries"] >= 10 * counts["acked"] // 2, counts  # each message reaches ~8 members
    assert counts["history_rooms_equal"] == 4
    assert all(result["faults"][kind] >= 3 for kind in ("gateway", "chat-service", "broadcaster", "nats-server",
                                                        "client-drop")), result["faults"]
    assert result["reconnects"] >= 10, result["reconnects"]
    assert "PASS" in run.stdout
