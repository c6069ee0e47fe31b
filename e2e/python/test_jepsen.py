"""The short run of the faults-between-hosts harness (`scripts/jepsen`, e2e/python/jepsen.py) in the test
suite: ten network namespaces, a 3-node NATS cluster and two of each service, 100 s of traffic under three
kinds of fault (a NATS node crash, kill -9 of a service, random loss on a link), then the checker; and 100 s
of majority/minority partitions, a service host cut from NATS, SIGSTOP past the timeouts and clock skew of
minutes, which break guarantees today and are marked so. The tests assert the verdict and that the run was not trivial.

Needs root (namespaces) and nftables/faketime (scripts/bootstrap); it is skipped otherwise. The seed is
random unless JEPSEN_SEED is set; it is printed, so a failing run can be replayed with
`scripts/jepsen --seed N --duration 100 --scenarios crash-node,kill,loss` (or the other list)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

import pytest

from system import REPO_ROOT

DURATION = 100
SCENARIOS = "crash-node,kill,loss"
# These currently break guarantees (docs/faults.md, "Results"): partitions between the nodes leave a hole
# in a room's seqs, an ack whose seq differs from the stored one and `since` replays that skip messages; a
# paused chat-service or a gateway's clock minutes behind gets a live gateway's members removed (sends then
# answer `not_member`; a chat-service cut from NATS does the same). The run is kept, expected to fail, until the services are fixed.
BROKEN = "partition-majority,cut-service,pause,skew"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("faketime"),
                                reason="needs root, nftables and faketime (scripts/bootstrap)")


def test_short_jepsen_run_passes(tmp_path):
    run_and_check(tmp_path, SCENARIOS, tolerate_not_member=True)


@pytest.mark.xfail(reason="seq holes, wrong acks, lossy since replays under partitions; live gateways expired "
                          "under a paused or cut-off chat-service or clock skew (docs/faults.md)", strict=False)
def test_short_jepsen_run_with_partitions_pauses_and_skew(tmp_path):
    run_and_check(tmp_path, BROKEN)


def run_and_check(tmp_path, scenarios: str, tolerate_not_member: bool = False) -> None:
    seed = int(os.environ.get("JEPSEN_SEED") or random.randrange(1, 1_000_000))
    out = tmp_path / "jepsen.json"
    command = [str(REPO_ROOT / "scripts/jepsen"), "--seed", str(seed), "--duration", str(DURATION),
               "--scenarios", scenarios, "--json", str(out), "--keep-logs", str(tmp_path / "logs"),
               "--prefix", "jt"]
    print(f"jepsen seed {seed}: replay with {' '.join(command[1:7])}")
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DURATION + 300, check=False)
    print(run.stdout[-8000:], run.stderr[-3000:])
    assert out.exists(), f"scripts/jepsen (seed {seed}) wrote no result (exit {run.returncode})"
    result = json.loads(out.read_text())
    counts = result.get("counts", {})
    bad = dict(result.get("bad") or {})
    tolerated = False
    if tolerate_not_member and set(bad) <= {"unexpected_error"} and bad and all(
            "'not_member'" in p for p in result["problems"] if p.startswith("unexpected_error")):
        # Known (docs/faults.md, "Results" 2.): a live gateway's members removed by the presence sweeper or
        # reconcile; the client re-joins and goes on. Every data guarantee is still checked below.
        print(f"known anomaly, tolerated: {bad['unexpected_error']} not_member answers to members")
        bad, tolerated = {}, True
    assert not bad and (result["pass"] or tolerated), (
        f"jepsen run with seed {seed} failed: {result.get('bad') or result.get('error')}; "
        f"problems: {result.get('problems')}; logs in {tmp_path / 'logs'}")
    # Not trivial: traffic flowed through the faults, each kind happened, the checks ran on real data.
    assert counts["acked"] >= 1000, counts
    assert counts["acked_stored_exactly_once"] == counts["acked"] == counts["stored_messages"]
    assert counts["member_rooms_exact"] == counts["member_rooms"] == 16
    assert counts["history_rooms_equal"] == 3
    assert set(result["faults"]) == set(scenarios.split(",")), result["faults"]
    assert result["replicas"]["equal"] and len(result["replicas"]["last_seq"]) == 3
    assert all(len(streams) >= 8 for streams in result["replicas"]["last_seq"].values()), result["replicas"]
    assert result["serving"]["ok"], result["serving"]
    assert counts["acked"] > 0 and result["faults"]
