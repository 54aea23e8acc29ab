"""Request bodies bounded while they stream: an ASGI middleware that refuses a body above the
upload limit as soon as it passes it, whether the client declared its length or sent it in
chunks (a chunked body has no Content-Length, and the multipart parser would otherwise spool
all of it to disk before the endpoint sees one byte). No Ray."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def too_large(limit: int, size: int | None = None) -> str:
    what = f"upload of {size / 2**20:.1f} MiB is" if size is not None else "upload is"
    return f"{what} above the limit of {limit / 2**20:.1f} MiB (max_upload_mb)"


class BodyLimit:
    """Refuse (413) a request whose body passes ``limit_of()`` bytes: at once when its
    Content-Length says so, else the moment the streamed bytes pass it (the app's body parser
    then stops reading: FastAPI lets an HTTPException from the body through as it is)."""

    def __init__(self, app: Callable, limit_of: Callable[[], int]) -> None:
        self.app, self.limit_of = app, limit_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.limit_of())
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, too_large(limit, int(declared)))
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, too_large(limit))
            return message

        async def closing(message: Message) -> None:
            """Past the limit the connection closes with the answer: the server reads no
            more of the body (it would otherwise drain it to keep the connection alive)."""
            if message["type"] == "http.response.start" and seen > limit:
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        await self.app(scope, bounded, closing)


async def _refuse(send: Send, message: str) -> None:
    """A 413 in the service's error schema ({"error", "status", "id"})."""
    import json

    body = json.dumps({"error": message, "status": 413, "id": None}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
