"""Helpers for tests of rooms people own (token mode): signed tokens, REST calls as a user, users known
to the directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import requests

SECRET = "access-tests-secret-that-is-long-enough-for-hs256"
TOKEN_ENV = {"AUTH_JWT_SECRET": SECRET}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, name: str | None = None, lifetime: int = 3600, secret: str = SECRET) -> str:
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "username": name or sub, "iat": now, "exp": now + lifetime}).encode())
    signature = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


@dataclass
class User:
    """A signed-in user: REST calls with its Bearer token; `id` is the user id the system derives."""
    gateway: Any
    name: str
    jwt: str
    id: str = ""

    def call(self, method: str, path: str, body: Any = None, anonymous: bool = False) -> requests.Response:
        headers = {} if anonymous else {"Authorization": f"Bearer {self.jwt}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(method, f"{self.gateway.base_url}{path}", headers=headers,
                                data=None if body is None else json.dumps(body), timeout=10)

    def ws_url(self) -> str:
        return self.gateway.ws_url(None, token=self.jwt)


def sign_in(gateway, name: str) -> User:
    """A user who has used the system once (so the directory knows them), with their id."""
    user = User(gateway, name, token(name))
    reply = user.call("GET", "/api/v1/rooms")
    assert reply.status_code == 200, reply.text
    found = user.call("GET", f"/api/v1/users?prefix={name}").json()["users"]
    user.id = next(u["user_id"] for u in found if u["username"] == name)
    return user
