"""The viewer's guards, applied to every response before any page code runs.

Why each one: an audit log holds prompts, tool arguments and results, so the viewer
is local by default and a page that reaches it from elsewhere must fail.

- Loopback by default; a non-loopback address is refused without a token
  (`check_bind`), and with a token every request must carry it (header, cookie, or
  ``?token=`` once, which becomes a cookie).
- On loopback, the ``Host`` header must name a loopback host: a web page on another
  site cannot rebind its own name to 127.0.0.1 and read the viewer through it.
- Recorded text is untrusted HTML: the templates escape it, and the
  Content-Security-Policy forbids inline script (and any script, style, image or
  connection from elsewhere), so markup that slipped through could not run anyway.
- Read-only: only GET and HEAD are answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["CSP", "TOKEN_COOKIE", "SecurityMiddleware", "check_bind", "is_loopback"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
TOKEN_COOKIE = "agentaudit_ui_token"
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_LOOPBACK_NAMES = {"localhost", "localhost."}
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token (ValueError)."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve on {host}: the viewer shows everything the agents recorded; "
            "bind to 127.0.0.1 (the default) or give --token to require it on every request"
        )
    if token is not None and not _TOKEN.fullmatch(token):
        raise ValueError(
            "--token must be 16 to 256 letters, digits or - _ . ~ (e.g. `openssl rand -hex 16`)"
        )


def _host_of(value: str) -> str:
    value = value.strip()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SecurityMiddleware:
    """Adds the security headers to every response; checks the method, the Host
    header (loopback) and the token (when one is set) before the app sees a request."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                message["headers"] = headers + _HEADERS
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send_with_headers, 405, "the viewer is read-only", [(b"allow", b"GET, HEAD")])
            return
        if self.loopback and not is_loopback(_host_of(headers.get("host", ""))):
            await _plain(send_with_headers, 421, "this viewer answers only to localhost / 127.0.0.1")
            return
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            given = dict(query).get("token")
            if given is not None and self._good(given):
                # Once, from the URL the command printed: then a cookie, and the token
                # leaves the address bar (and the history, and any Referer).
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                # One leading slash: "//host/..." would send the browser to another site.
                location = "/" + scope["path"].lstrip("/") + (f"?{rest}" if rest else "")
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                await _plain(send_with_headers, 303, "see other",
                             [(b"location", location.encode()), (b"set-cookie", cookie.encode())])
                return
            if not self._authorized(headers):
                await _plain(send_with_headers, 401, "this viewer needs its token (--token)")
                return
        await self.app(scope, receive, send_with_headers)

    def _good(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self._good(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and self._good(morsel.value)


_OURS = {name for name, _v in _HEADERS}


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
