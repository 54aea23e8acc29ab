"""Who may call an exposed xrp: loopback binds are local, any other bind needs an API key (or an
explicit --insecure), and a key, once set, is checked on every route but the open ones. Used by
the Serve ingress (`xrp serve`) and the live page of `xrp watch --ui`. No Ray.

Clients send the key as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. A browser opens a
page once as ``/ui?key=KEY`` (or ``/ui/runs/RUN?key=KEY``): the answer sets an HttpOnly,
SameSite=Strict cookie holding a digest of the key, which the page's own requests (its
EventSource cannot send headers) then carry. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KEY_ENV = "XRP_API_KEY"
KEY_HEADER = "x-api-key"
COOKIE = "xrp_key"
#: open to anyone: liveness probes and the API's documentation (no data, no model details)
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json"})
UNAUTHORIZED = ("missing or wrong API key: send it as the X-API-Key header (or Authorization: "
                "Bearer KEY); in a browser, open /ui?key=KEY once")
_COOKIE_CONTEXT = b"xrp live page cookie v1"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine ('localhost', 127.x, ::1)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False  # another name, '' or 0.0.0.0-like: treated as exposed
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def clean_key(key: str | None) -> str | None:
    """The key as given (None when unset or blank); ValueError if no header could carry it."""
    if key is None or not key.strip():
        return None
    key = key.strip()
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ValueError("the API key must be printable ASCII without spaces (it travels in an "
                         "HTTP header)")
    return key


def check_bind(host: str, key: str | None, insecure: bool, option: str = "--host") -> str | None:
    """None when binding ``host`` is allowed as asked; the warning to print when --insecure
    exposes it without a key. ValueError (one line) when the command must not start."""
    if key or is_loopback(host):
        return None
    if not insecure:
        raise ValueError(f"{option} {host} is reachable from other machines: give an API key "
                         f"(--api-key or ${KEY_ENV}), or --insecure to serve without one")
    return (f"{option} {host} without an API key (--insecure): anyone who can reach this port "
            "can use it")


def same(given: str | None, expected: str) -> bool:
    """Constant-time equality of a presented secret and the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def cookie_value(key: str) -> str:
    """What the browser cookie holds: a digest of the key, never the key itself."""
    return hmac.new(key.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def _relative_path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _is_ui(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def _is_page(conn: HTTPConnection, path: str) -> bool:
    """An HTML page of the live page (where ``?key=`` is taken), not its data routes."""
    return (conn.scope.get("method") in ("GET", "HEAD") and not path.endswith(".png")
            and (path == "/ui" or path.startswith("/ui/runs/")))


def authorized(conn: HTTPConnection, key: str, path: str) -> bool:
    """The request carries the key: a header, or (live page routes) the page's cookie."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if same(conn.headers.get(KEY_HEADER), key) or \
            (scheme.lower() == "bearer" and same(token.strip(), key)):
        return True
    return _is_ui(path) and same(conn.cookies.get(COOKIE), cookie_value(key))


def unauthorized() -> JSONResponse:
    """401 in the service's error schema; never names the key."""
    return JSONResponse({"error": UNAUTHORIZED, "status": 401, "id": None}, status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="xrp"'})


def _setting_cookie(send: Send, scope: Scope, key: str) -> Send:
    """``send`` that adds the page cookie (and keeps the URL with the key out of caches and
    referrers) to the response."""
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    cookie = (f"{COOKIE}={cookie_value(key)}; Path={scope.get('root_path', '')}/ui; HttpOnly; "
              f"SameSite=Strict{secure}")

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers.append("set-cookie", cookie)
            headers["referrer-policy"] = "no-referrer"
            headers["cache-control"] = "no-store"
        await send(message)

    return wrapped


class RequireKey:
    """ASGI middleware: when ``key_of()`` gives a key (read per request: a Serve replica sets it
    after the app is built), every route but OPEN_PATHS needs it, else a 401."""

    def __init__(self, app: ASGIApp, key_of: Callable[[], str | None]) -> None:
        self.app, self.key_of = app, key_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.key_of() if scope["type"] in ("http", "websocket") else None
        path = _relative_path(scope)
        if not key or path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        if authorized(conn, key, path):
            return await self.app(scope, receive, send)
        if _is_page(conn, path) and same(conn.query_params.get("key"), key):
            return await self.app(scope, receive, _setting_cookie(send, scope, key))
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await unauthorized()(scope, receive, send)
