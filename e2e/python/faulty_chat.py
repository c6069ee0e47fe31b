"""A minimal seed-protocol chat server that misbehaves on purpose, for chat-bench's own tests.

    python faulty_chat.py FAULT WS_PORT REST_PORT      (prints "ready" once both listen)

REST: POST /api/v1/rooms → 201 with a new room id. WebSocket (any path): connected, join → joined,
message → message to every member of the room in seq order (+ ack with client_msg_id). The first
member to join receives, once: FAULT "drop" no seq 3, "dup" seq 2 twice, "reorder" seq 5 before 4;
"none" behaves.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.asyncio.server import serve

FAULT = sys.argv[1]
members: dict[str, list] = {}
seqs: dict[str, int] = {}
locks: dict[str, asyncio.Lock] = {}
victim = None
held = None


class Rest(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"id": str(uuid.uuid4()), "name": "r", "created_at": "t", "member_count": 0}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def deliver(ws, frame: str, seq: int) -> None:
    global held
    if ws is not victim or FAULT == "none":
        await ws.send(frame)
    elif FAULT == "drop" and seq == 3:
        pass
    elif FAULT == "dup" and seq == 2:
        await ws.send(frame)
        await ws.send(frame)
    elif FAULT == "reorder" and seq == 4:
        held = frame
    elif FAULT == "reorder" and seq == 5:
        await ws.send(frame)
        await ws.send(held)
    else:
        await ws.send(frame)


async def handler(ws) -> None:
    global victim
    await ws.send(json.dumps({"type": "connected", "user_id": str(uuid.uuid4()), "username": "x", "gateway_id": "fake"}))
    room = None
    async for text in ws:
        frame = json.loads(text)
        if frame["type"] == "join":
            room = frame["room_id"]
            async with locks.setdefault(room, asyncio.Lock()):
                members.setdefault(room, []).append(ws)
                victim = victim or ws
                await ws.send(json.dumps({"type": "joined", "room_id": room, "room": {"id": room}, "last_seq": seqs.get(room, 0)}))
        elif frame["type"] == "message":
            target = frame.get("room_id", room)
            async with locks[target]:  # one message at a time per room: seq order is delivery order
                seq = seqs[target] = seqs.get(target, 0) + 1
                out = json.dumps({"type": "message", "room_id": target, "seq": seq, "content": frame["content"],
                                  "message_id": "m", "user_id": "u", "username": "x", "timestamp": "t"})
                for member in list(members[target]):
                    await deliver(member, out, seq)
                if "client_msg_id" in frame:
                    await ws.send(json.dumps({"type": "ack", "client_msg_id": frame["client_msg_id"], "seq": seq,
                                              "room_id": target, "message_id": "m"}))


async def main() -> None:
    rest = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Rest)
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    async with serve(handler, "127.0.0.1", int(sys.argv[2])):
        print("ready", flush=True)
        await asyncio.sleep(120)  # bounded: the test kills it long before


if __name__ == "__main__":
    asyncio.run(main())
