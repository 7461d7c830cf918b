"""Bounds on requests, as a pure ASGI middleware: nothing past a limit is read or kept.

A declared Content-Length over the limit is refused before the body is read; a chunked body is
counted as it arrives and refused as soon as the count passes the limit: 413. Headers over
MAX_HEADERS bytes in all are refused with 431: h11 bounds only a head that arrives in pieces (16 KiB
of an incomplete head), so one that arrives whole in one read, up to hundreds of KiB, reaches the
app. Either way the client gets the refusal in its face's error format (the app's `refuse` renders it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

Refuse = Callable[[Request, "TooLarge"], Response]
MAX_HEADERS = 32 * 1024  # bytes of header names and values in one request


class TooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit; an HTTPException so that FastAPI's own
    body reading lets it through to the app's handler instead of turning it into a 400."""

    def __init__(self, limit: int, seen: int | None = None, status: int = 413, message: str | None = None) -> None:
        size = f"of {seen} bytes" if seen is not None else "larger than that"
        super().__init__(
            status,
            message or f"request body {size} refused: at most {limit} bytes are accepted (IMSSO_MAX_BODY)",
            {"Connection": "close"},
        )
        self.limit = limit


def _headers_too_large(size: int) -> TooLarge:
    return TooLarge(
        MAX_HEADERS,
        status=431,
        message=(
            f"request headers of {size} bytes refused: at most {MAX_HEADERS} bytes of headers are accepted;"
            " send many OCCI attributes in a text/plain or application/occi+json body instead"
        ),
    )


class RequestLimits:
    def __init__(self, app: Callable[..., Awaitable[None]], limit: int, refuse: Refuse) -> None:
        self.app = app
        self.limit = limit
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
        if head > MAX_HEADERS:
            await self._send_refusal(scope, receive, send, _headers_too_large(head))
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._send_refusal(scope, receive, send, TooLarge(self.limit, declared))
            return
        started, seen = False, 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(self.limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except TooLarge as refusal:  # read where no handler of the app saw it
            if started:
                raise
            await self._send_refusal(scope, receive, send, refusal)

    async def _send_refusal(self, scope: Scope, receive: Receive, send: Send, refusal: TooLarge) -> None:
        response = self.refuse(Request(scope), refusal)
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's HTTP parser refuses these before we see them
    return None
