"""Benchmark (issue 9): do clients that stop reading slow the others down?

    .venv/bin/python e2e/python/slowbench.py [--rooms 3] [--members 18] [--rate 50] [--duration 20]
                                               [--padding 3000] [--queue-limit 64] [--json FILE]

Starts nats-server + chat-service + broadcaster + one gateway (the .build/debug binaries, through
system.py), then runs the same phase twice on fresh rooms: `--rooms` rooms of `--members` reading
members, one of them sending `--rate` msgs/s into its room for `--duration` s, measuring each delivery's
latency (send → arrival at every reader); the second time, 10 % more members per room join and never
read (raw sockets with a 4 KiB receive buffer). It prints p50/p99/max for the readers of both phases,
how many non-readers were disconnected (`gateway_slow_client_disconnects_total`), the readers' losses
(must be 0) and the gateway's RSS. The clients run in this one Python process, so the latencies
include its own scheduling; the comparison is what matters."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from chatclient import Client, create_room  # noqa: E402
from system import System, cleanup_binaries  # noqa: E402
from test_faults import rss_kib  # noqa: E402
from test_gateway import RawWebSocket  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


async def phase(system: System, args: argparse.Namespace, sloths_per_room: int) -> dict:
    gateway = system.gateway
    rooms = [create_room(gateway)["id"] for _ in range(args.rooms)]
    sloths = []
    for room in rooms:
        for n in range(sloths_per_room):
            sloth = await asyncio.to_thread(RawWebSocket, gateway.port, f"/ws?username=sloth{n}")
            sloth.send_text(json.dumps({"type": "join", "room_id": room}))
            await asyncio.to_thread(sloth.read_until, b'"type":"joined"')
            sloths.append(sloth)
    readers = {room: [await Client.connect(gateway, f"r{n}") for n in range(args.members)] for room in rooms}
    for room, clients in readers.items():
        for client in clients:
            await client.join(room)
    slow_before = gateway.metric("gateway_slow_client_disconnects_total")
    rss_start = rss_kib(gateway.pid)
    sent_at: dict[str, float] = {}
    padding = "x" * args.padding

    async def send(room: str) -> int:
        sender = readers[room][0]
        count = int(args.rate * args.duration)
        start = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
            cmid = uuid.uuid4().hex[:16]
            sent_at[cmid] = time.monotonic()
            await sender.send({"type": "message", "room_id": room, "client_msg_id": cmid, "content": f"{cmid} {padding}"})
        return count

    counts = await asyncio.gather(*(send(room) for room in rooms))
    latencies: list[float] = []
    missing = 0
    for room, clients in readers.items():
        for client in clients:
            try:
                await client.wait_messages(room, counts[0], timeout=30)
            except AssertionError:
                pass
            got = client.messages(room)
            seqs = [m["seq"] for m in got]
            missing += counts[0] - len(set(seqs))
            assert seqs == sorted(set(seqs)), f"{client.label}: duplicates or reordering"
            arrivals = {f.data["client_msg_id"]: f.at for f in client.frames if f.data.get("type") == "message"}
            latencies += [at - sent_at[cmid] for cmid, at in arrivals.items() if cmid in sent_at]
    rss_end = rss_kib(gateway.pid)
    disconnected = gateway.metric("gateway_slow_client_disconnects_total") - slow_before
    for clients in readers.values():
        for client in clients:
            await client.close()
    for sloth in sloths:
        sloth.close()
    return {"non_readers": len(sloths), "readers": args.rooms * args.members, "messages": sum(counts),
            "deliveries": len(latencies), "missing": missing, "non_readers_disconnected": int(disconnected),
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": max(latencies, default=0) * 1000, "gateway_rss_mib": [rss_start // 1024, rss_end // 1024]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--members", type=int, default=18, help="reading members per room [18]")
    parser.add_argument("--rate", type=float, default=50, help="msgs/s per room [50]")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--padding", type=int, default=3000, help="content bytes per message [3000]")
    parser.add_argument("--queue-limit", type=int, default=64, help="gateway OUTBOUND_QUEUE_LIMIT [64]")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sloths = max(1, round(args.members / 9))  # 10 % of all members (readers + non-readers)
    system = System(Path(tempfile.mkdtemp(prefix="slowbench-")))
    try:
        system.start(gateway_env={"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000",
                                  "OUTBOUND_QUEUE_LIMIT": str(args.queue_limit)})
        results = {}
        for name, per_room in (("without non-readers", 0), (f"with {sloths} non-readers per room", sloths)):
            results[name] = asyncio.run(phase(system, args, per_room))
            r = results[name]
            print(f"{name}: {r['readers']} readers, {r['non_readers']} non-readers "
                  f"({r['non_readers_disconnected']} disconnected), {r['messages']} msgs -> {r['deliveries']} deliveries, "
                  f"missing {r['missing']}; latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                  f"max {r['max_ms']:.1f} ms; gateway RSS {r['gateway_rss_mib'][0]} -> {r['gateway_rss_mib'][1]} MiB",
                  flush=True)
        base, slow = results.values()
        ratio = slow["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("inf")
        print(f"readers' p99 with non-readers / without: {ratio:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "p99_ratio": ratio}, indent=2))
        ok = slow["missing"] == 0 and base["missing"] == 0 and slow["non_readers_disconnected"] == slow["non_readers"]
        return 0 if ok else 1
    finally:
        system.stop()
        cleanup_binaries()


if __name__ == "__main__":
    sys.exit(main())
