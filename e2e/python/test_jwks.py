"""Token mode with a JWKS (`AUTH_JWKS_URL`) against the real system: a key server the test runs (http.server
on a free loopback port), RS256, ES256 and EdDSA tokens signed here, key rotation through the reload on an
unknown `kid` (rate-limited), the start-up retry while the key server fails, a key set file that cannot be
used, the `auth` refresh frame on an open socket (new expiry, new forwarded token, another user: 4003, an
invalid token: an error frame), and REST writes with a JWKS token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from chatclient import Client, Rejected, run, unique
from system import System, service_binary

ISSUER = "https://idp.example"
AUDIENCE = "nats-chat-jwks"


class SigningKey:
    """A private key made here, its public JWK and tokens signed with it (PyJWT over cryptography)."""

    def __init__(self, algorithm: str, kid: str):
        self.algorithm, self.kid = algorithm, kid
        if algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        elif algorithm == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update({"kid": kid, "use": "sig", "alg": algorithm})

    def token(self, kid: str | None = "", **claims: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid if kid == "" else kid} if kid is not None else {})


def claims(sub: str, lifetime: float = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": int(now + lifetime), **extra}


class KeyServer:
    """Serves a JWKS per path (`/{name}.json`), counts the requests per path; a path marked down answers 503."""

    def __init__(self):
        self.sets: dict[str, list[dict[str, Any]]] = {}
        self.down: set[str] = set()
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.strip("/").removesuffix(".json")
                with server.lock:
                    server.hits[name] = server.hits.get(name, 0) + 1
                    keys = server.sets.get(name)
                    down = name in server.down
                if keys is None or down:
                    self.send_response(503 if down else 404)
                    self.end_headers()
                    return
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/{name}.json"

    def publish(self, name: str, *keys: SigningKey) -> None:
        with self.lock:
            self.sets[name] = [key.jwk for key in keys]

    def count(self, name: str) -> int:
        with self.lock:
            return self.hits.get(name, 0)

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey(alg, f"{alg.lower()}-1") for alg in ("RS256", "ES256", "EdDSA")}


@pytest.fixture(scope="module")
def key_server(keys):
    server = KeyServer()
    server.publish("main", *keys.values())
    yield server
    server.stop()


def token_env(url: str, **extra: str) -> dict[str, str]:
    return {"AUTH_JWKS_URL": url, "AUTH_JWT_ISSUER": ISSUER, "AUTH_JWT_AUDIENCE": AUDIENCE,
            "AUTH_JWKS_REFETCH_SECONDS": "1", **extra}


@pytest.fixture(scope="module")
def system(tmp_path_factory, key_server):
    """nats-server, a chat-service and a gateway, both in token mode with the key server's `main` set."""
    system = System(tmp_path_factory.mktemp("jwks-system"))
    env = token_env(key_server.url("main"))
    try:
        system.start(chat_env=env, gateway_env=env)
        yield system
    finally:
        system.stop()


def post_room(system: System, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(system.gateway.base_url + "/api/v1/rooms", json={"name": unique()}, headers=headers, timeout=10)


def new_room(system: System, key: SigningKey) -> str:
    response = post_room(system, key.token(**claims("room-maker")))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def joined_client(system: System, token: str, room: str) -> Client:
    client = await Client.open(system.gateway.ws_url(token=token))
    await client.join(room)
    return client


async def acked(client: Client, content: str) -> None:
    reply = await client.send_message(content)
    assert reply["type"] == "ack", reply


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_each_algorithm_connects_and_sends(system, keys):
    room = new_room(system, keys["RS256"])

    async def body():
        for alg, key in keys.items():
            sub = f"{alg}-{uuid.uuid4().hex[:6]}"
            client = await joined_client(system, key.token(**claims(sub, username=alg)), room)
            assert client.connected["username"] == alg, client.connected
            await acked(client, f"signed with {alg}")
            await client.close()

    run(body())
    log = system.gateway.log.read_text(errors="replace")
    assert "auth mode: token (JWKS from AUTH_JWKS_URL" in log, log[-2000:]


def test_rest_writes_take_a_jwks_token(system, keys):
    assert post_room(system, keys["EdDSA"].token(**claims("rest-user"))).status_code == 201
    refused = post_room(system, None)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized", refused.text
    forged = SigningKey("ES256", keys["ES256"].kid)  # the published kid, another key
    refused = post_room(system, forged.token(**claims("rest-user")))
    assert refused.status_code == 401 and "bad signature" in refused.json()["error"], refused.text


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hostile_jwks_tokens_are_refused(system, keys):
    rsa_key = keys["RS256"]
    body = b64(json.dumps(claims("hostile")).encode())
    unsigned = b64(json.dumps({"alg": "none", "kid": rsa_key.kid}).encode()) + "." + body + "."
    # alg confusion: HS256 with the RSA public key (PEM) as the HMAC secret, naming the RSA key
    public_pem = rsa_key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    confused_head = b64(json.dumps({"alg": "HS256", "kid": rsa_key.kid}).encode())
    confused = f"{confused_head}.{body}." + b64(hmac.new(public_pem, f"{confused_head}.{body}".encode(), hashlib.sha256).digest())
    cases = [
        ("alg none", unsigned, "alg none"),
        ("alg confusion", confused, "alg HS256 does not match kid rs256-1's key (RS256)"),
        ("alg of another key", keys["ES256"].token(kid=rsa_key.kid, **claims("x")), "alg ES256 does not match"),
        ("expired", rsa_key.token(**claims("x", lifetime=-5)), "expired"),
        ("foreign aud", rsa_key.token(**{**claims("x"), "aud": "other"}), "aud"),
        ("oversized", rsa_key.token(**claims("x", pad="p" * 9000)), "at most 8192"),
    ]
    for what, token, reason in cases:
        response = requests.get(system.gateway.base_url + "/ws", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401, (what, response.status_code, response.text)
        assert reason in response.json()["error"], (what, response.text)


def test_key_rotation_reloads_the_set_and_a_flood_of_unknown_kids_is_rate_limited(system, keys, key_server):
    rotated = SigningKey("ES256", "rotated-" + uuid.uuid4().hex[:6])
    room = new_room(system, keys["RS256"])

    async def body():
        with pytest.raises(Rejected) as refused:
            await Client.open(system.gateway.ws_url(token=rotated.token(**claims("rotating"))))
        assert refused.value.status == 401 and "unknown kid" in refused.value.json()["error"], refused.value.json()
        key_server.publish("main", *keys.values(), rotated)
        # accepted once the gateway has reloaded the set (at most once per AUTH_JWKS_REFETCH_SECONDS=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client = await joined_client(system, rotated.token(**claims("rotating")), room)
                break
            except Rejected as error:
                assert "unknown kid" in error.json()["error"] and time.monotonic() < deadline, error.json()
                await asyncio.sleep(0.2)
        # the chat-service verifies the forwarded token itself: it reloads the set too
        await acked(client, "signed with the rotated key")
        await client.close()

    run(body())

    # a gateway with the default interval (30 s): a flood of made-up kids costs the key server one request
    key_server.publish("flood", *keys.values())
    gateway = system.add_gateway(token_env(key_server.url("flood"), AUTH_JWKS_REFETCH_SECONDS=""))
    try:
        before = key_server.count("flood")
        assert before >= 1
        for index in range(40):
            token = keys["RS256"].token(kid=f"bogus-{index}", **claims("flooder"))
            response = requests.post(gateway.base_url + "/api/v1/rooms", json={"name": unique()},
                                     headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert response.status_code == 401 and "unknown kid" in response.json()["error"], response.text
        assert key_server.count("flood") - before <= 1, (before, key_server.count("flood"))
    finally:
        gateway.stop()


def test_the_auth_frame_refreshes_an_open_socket(system, keys):
    key = keys["ES256"]
    room = new_room(system, key)
    sub = "refresher-" + uuid.uuid4().hex[:6]

    async def body():
        first_exp = int(time.time()) + 3
        client = await joined_client(system, key.token(**{**claims(sub), "exp": first_exp}), room)
        # an invalid token: an error frame, the socket as it was
        reply = await client.request({"type": "auth", "token": "garbage"}, "authenticated")
        assert reply["type"] == "error" and reply["code"] == "unauthorized" and "not a JWT" in reply["error"], reply
        reply = await client.request({"type": "auth", "token": key.token(**claims(sub, lifetime=-5))}, "authenticated")
        assert reply["type"] == "error" and "expired" in reply["error"], reply
        await acked(client, "still open")
        # a valid token of the same user: the socket lives until its exp (an RS256 one: any key of the set)
        second_exp = first_exp + 4
        reply = await client.request(
            {"type": "auth", "token": keys["RS256"].token(**{**claims(sub), "exp": second_exp})}, "authenticated")
        assert reply == {"type": "authenticated", "expires_at": rfc3339(second_exp)}, reply
        while time.time() < first_exp + 1:  # past the first token's exp
            assert client.close_code is None, client.close_code
            await asyncio.sleep(0.1)
        # still open, and the chat-service got the new token (it refuses the expired first one)
        await acked(client, "after the first token's exp")
        await client.wait_closed(timeout=10)
        assert (client.ws.close_code, client.ws.close_reason) == (4001, "token expired"), client.ws.close_code
        assert time.time() >= second_exp - 0.2

        # another user's token: refused, and the socket closed with 4003
        other = await joined_client(system, key.token(**claims(sub)), room)
        reply = await other.request({"type": "auth", "token": key.token(**claims(sub + "-other"))}, "authenticated")
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        await other.wait_closed(timeout=10)
        assert other.ws.close_code == 4003, (other.ws.close_code, other.ws.close_reason)

    run(body())


def test_the_auth_frame_in_username_mode_changes_nothing(system, keys):
    gateway = system.add_gateway({})  # no token settings: username mode

    async def body():
        client = await Client.open(gateway.ws_url("plain-user"))
        reply = await client.request({"type": "auth", "token": keys["RS256"].token(**claims("x"))}, "authenticated")
        assert reply["type"] == "error" and reply["code"] == "auth_not_enabled", reply
        reply = await client.request({"type": "auth"}, "authenticated")
        assert reply["type"] == "error" and reply["code"] == "invalid_request", reply
        await asyncio.wait_for(await client.ws.ping(), 5)  # the socket is alive
        assert client.close_code is None
        await client.close()

    try:
        run(body())
    finally:
        gateway.stop()


def test_start_up_waits_for_the_key_server_and_refuses_an_unusable_file(system, keys, key_server, tmp_path):
    key_server.publish("late", keys["EdDSA"])
    key_server.down.add("late")
    gateway = system.add_gateway(token_env(key_server.url("late")), wait=False)
    try:
        deadline = time.monotonic() + 15
        while "loading the token key set failed, retrying" not in gateway.log.read_text(errors="replace"):
            assert gateway.running and time.monotonic() < deadline, gateway.tail()
            time.sleep(0.05)
        assert not gateway.probe()
        key_server.down.discard("late")
        gateway.wait_ready()
        assert key_server.count("late") >= 2
        assert post_room_on(gateway, keys["EdDSA"].token(**claims("late-user"))).status_code == 201
    finally:
        gateway.stop()

    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}')
    for path, message in [(str(tmp_path / "missing.json"), "cannot read"), (str(bad), "no usable key")]:
        env = {**os.environ, "NATS_URL": system.nats.url, "PORT": "0", "HOST": "127.0.0.1", "AUTH_JWKS_FILE": path}
        for binary in ("gateway", "chat-service"):
            result = subprocess.run([str(service_binary(binary))], env=env, capture_output=True, timeout=30,
                                    stdin=subprocess.DEVNULL)
            output = (result.stdout + result.stderr).decode(errors="replace")
            assert result.returncode == 2, (binary, path, output)
            assert "AUTH_JWKS_FILE" in output and message in output, (binary, output)


def post_room_on(gateway, token: str) -> requests.Response:
    return requests.post(gateway.base_url + "/api/v1/rooms", json={"name": unique()},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
