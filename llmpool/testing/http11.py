"""A small HTTP/1.1 reader and writer for the mock server.

Just enough HTTP for the server's clients: request line, headers,
``Content-Length`` or chunked request bodies, ``Expect: 100-continue``;
responses with ``Content-Length`` or chunked transfer coding. Hand-written
over a buffered socket file because ``http.server`` is several times slower.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, BinaryIO

import attrs

__all__ = [
    "CHUNKED_END",
    "BadRequest",
    "HttpRequest",
    "chunk",
    "http_date",
    "read_body",
    "read_head",
    "response_head",
]

MAX_LINE = 65536
MAX_HEADERS = 200
MAX_BODY = 64 * 1024 * 1024
#: The last chunk of a chunked body.
CHUNKED_END = b"0\r\n\r\n"

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site Overloaded",
}


class BadRequest(Exception):
    """The client sent something that is not HTTP/1.x; the server answers 400 and closes."""


@attrs.define(kw_only=True)
class HttpRequest:
    """One parsed request. Confined to the connection thread that read it."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""
    _decoded: Any = attrs.field(default=None, init=False, repr=False)
    _has_decoded: bool = attrs.field(default=False, init=False, repr=False)

    def json(self) -> Any:
        """The body decoded as JSON (decoded once); raises ValueError when it is not JSON."""
        if not self._has_decoded:
            self._decoded = json.loads(self.body)
            self._has_decoded = True
        return self._decoded

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string, without ``?``."""
        return self.target.partition("?")[2]

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection live after the response."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def chunked_ok(self) -> bool:
        """Whether the client understands a chunked response (HTTP/1.1)."""
        return self.version != "HTTP/1.0"


def _readline(rfile: BinaryIO) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequest("line too long")
    return line


def read_head(rfile: BinaryIO) -> HttpRequest | None:
    """Read a request line and headers; None when the client closed between requests."""
    line = _readline(rfile)
    if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore one empty line before a request
        line = _readline(rfile)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        raw = _readline(rfile)
        if raw in (b"\r\n", b"\n"):
            return HttpRequest(method=parts[0], target=parts[1], version=parts[2], headers=headers)
        if not raw:
            raise BadRequest("connection closed inside the headers")
        name, colon, value = raw.decode("latin-1").partition(":")
        if not colon:
            raise BadRequest(f"bad header line {raw[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise BadRequest("too many headers")


def _read_exact(rfile: BinaryIO, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise BadRequest("connection closed inside the body")
    return data


def _read_chunked(rfile: BinaryIO) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = _readline(rfile).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            while _readline(rfile) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise BadRequest("body too large")
        parts.append(_read_exact(rfile, size))
        _readline(rfile)


def read_body(rfile: BinaryIO, request: HttpRequest) -> bytes:
    """Read the body *request* announces (Content-Length or chunked)."""
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return _read_chunked(rfile)
    length = request.headers.get("content-length")
    if not length:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise BadRequest(f"bad Content-Length {length[:20]!r}") from None
    if not 0 <= size <= MAX_BODY:
        raise BadRequest("bad Content-Length")
    return _read_exact(rfile, size)


_date_cache: tuple[int, str] = (0, "")


def http_date(when: float | None = None) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); now by default, cached per second."""
    global _date_cache  # noqa: PLW0603 - a one-entry cache, rebound atomically
    if when is not None:
        return email.utils.formatdate(when, usegmt=True)
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line and headers of a response, with ``date``, ending in the blank line."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"date: {http_date()}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """*data* framed as one chunk of a chunked body (empty data frames to nothing)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)
