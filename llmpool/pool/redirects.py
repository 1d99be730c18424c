"""Redirects, followed below the client by a wrapping transport.

:class:`RedirectingTransport` sends through another
:class:`~llmpool.pool.interfaces.Transport` and follows up to five
redirects. Credentials never leave the origin they were meant for: on any
change of scheme, host or port (``https`` to ``http`` on the same host
included) every secret header (:func:`llmpool.redaction.is_secret_header`:
Authorization, Proxy-Authorization, Cookie, key and token headers, and the
provider's declared ``secret_headers``) is dropped for the rest of the call,
even if a later redirect comes back to the first origin.

Thread-safe: it keeps no state between calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from llmpool.pool.interfaces import HTTPResponse, Transport
from llmpool.redaction import is_secret_header

__all__ = ["REDIRECT_STATUSES", "RedirectingTransport", "origin"]

#: The statuses whose ``Location`` is followed.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of *url*, the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class RedirectingTransport:
    """Follows redirects for *inner*; the same method and body are sent again."""

    def __init__(
        self, inner: Transport, *, secret_headers: Iterable[str] = (), max_redirects: int = 5
    ) -> None:
        self.inner = inner
        self.secret_headers = tuple(secret_headers)
        self.max_redirects = max_redirects

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stream: bool = False,
        pool_timeout: float | None = None,
        deadline: float | None = None,
    ) -> HTTPResponse:
        """Send, then follow at most ``max_redirects`` redirects."""

        def send(target: str, sent: Mapping[str, str] | None) -> HTTPResponse:
            return self.inner.request(
                method,
                target,
                body=body,
                headers=sent,
                timeout=timeout,
                stream=stream,
                pool_timeout=pool_timeout,
                deadline=deadline,
            )

        response = send(url, headers)
        first = origin(url)
        kept = dict(headers or {})
        for _ in range(self.max_redirects):
            location = response.header("location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            response.drain()
            url = urljoin(url, location)
            if origin(url) != first:
                declared = self.secret_headers
                kept = {k: v for k, v in kept.items() if not is_secret_header(k, declared)}
            response = send(url, kept)
        return response

    def get_stats(self) -> dict[str, Any]:
        """The inner transport's statistics."""
        return self.inner.get_stats()

    def close_idle(self) -> int:
        """Close the inner transport's idle connections."""
        return self.inner.close_idle()

    def close(self) -> None:
        """Nothing of its own: the inner transport belongs to its owner."""
