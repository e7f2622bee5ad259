"""The console's token: every request that changes something must carry it.

A request carries it as ``Authorization: Bearer TOKEN`` (scripts) or as the
session cookie that opening the printed URL (``/?token=TOKEN``) sets: HttpOnly
(page scripts cannot read it) and SameSite=Strict (a page of another site
cannot make the browser send it), so another local user or a foreign page
cannot abort machines. Reads (GET) change nothing and need no token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

COOKIE = "fsmlog_console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def presented(scope: dict[str, Any]) -> str | None:
    """The token a request carries: its bearer token, else its session cookie."""
    auth = _header(scope, b"authorization")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for part in _header(scope, b"cookie").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


class TokenGuard:
    """ASGI middleware: 401 for a change without the token; ``?token=`` on a page sets the cookie.

    ``scope["state"]["authorized"]`` tells the pages whether to offer the actions."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    def valid(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and scope["method"] in SAFE_METHODS:
            if not self.valid(given[-1]):
                await _json(send, 401, "the token in the URL is not this console's; use the URL "
                                       "`fsmlog console` printed")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode()),
                                    (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]})
            await send({"type": "http.response.body", "body": b""})
            return
        authorized = self.valid(presented(scope))
        if scope["method"] not in SAFE_METHODS and not authorized:
            await _json(send, 401, f"{scope['method']} {scope['path']} needs the console's token: "
                                   "Authorization: Bearer TOKEN, or open the URL `fsmlog console` printed")
            return
        scope.setdefault("state", {})["authorized"] = authorized
        await self.app(scope, receive, send)


async def _json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="fsmlog console"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
