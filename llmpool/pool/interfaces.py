"""The transport seam, and the connection pool interface (the seed's ``IConnectionPool``).

:class:`Transport` is everything the client needs below it: one
``request()`` and a few housekeeping calls. :class:`~llmpool.ConnectionPool`
implements it, and so do the requests transport, the redirect-following
wrapper and anything a user passes as ``Client(pool=...)`` (their own pool, a
recording transport in tests). :class:`HTTPResponse` is what ``request()``
returns. :class:`IConnectionPool` is a transport that also lends raw
connections.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["HTTPResponse", "IConnectionPool", "Transport"]


@runtime_checkable
class HTTPResponse(Protocol):
    """A response whose status line and headers have been read; the body
    not yet. Confined to the thread that made it. Closing it (or reading it
    to the end) gives its connection back."""

    status: int
    headers: Mapping[str, str]
    #: Whether the request went over a connection that served one before.
    connection_reused: bool

    def header(self, name: str) -> str | None:
        """A header's value (case-insensitive), or None."""

    def read(self, max_bytes: int | None = None) -> bytes:
        """The whole (decoded) body; ResponseTooLarge beyond *max_bytes*."""

    def iter_bytes(self) -> Iterator[bytes]:
        """The body as it arrives, in bounded pieces."""

    def drain(self, limit: int = 1 << 20) -> bool:
        """Read what is left (at most *limit* bytes) to reuse the connection."""

    def close(self) -> None:
        """Give the connection back (closed unless the body was read to the end)."""


@runtime_checkable
class Transport(Protocol):
    """What the client sends through. Shared by every thread: implementations
    must be thread-safe.

    ``request()`` sends one request and returns the response with its
    headers read (``stream=True``: the caller reads the body and closes it;
    ``stream=False``: the body is read and the connection is back).
    *timeout* bounds the connect and each read; *pool_timeout* can only
    shorten the configured wait for a free connection; *deadline* is an
    absolute ``time.monotonic()`` instant that bounds every read of the
    exchange. Errors are llmpool's own
    (:class:`~llmpool.exceptions.TransportError` subclasses).
    """

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
        """Send one request; see the class docstring."""

    def get_stats(self) -> dict[str, Any]:
        """Statistics as plain data (``in_use`` and ``idle`` when it pools)."""

    def close_idle(self) -> int:
        """Close idle connections (memory pressure); return how many."""

    def close(self) -> None:
        """Release everything the transport holds."""


class IConnectionPool(Transport, abc.ABC):
    """A :class:`~llmpool.pool.interfaces.Transport` that also lends raw connections: the original
    design's pool interface.

    Implementations are shared by every thread of a process and must be
    thread-safe. They are context managers: leaving the ``with`` block closes
    the pool. :meth:`acquire`, :meth:`release` and :meth:`get_stats` are the
    original design's interface and keep their meaning; ``request()`` (the
    Transport's) is what the client calls.
    """

    @abc.abstractmethod
    def acquire(self, base_url: str) -> Any:
        """Check out a raw connection to *base_url*'s host, waiting up to the
        pool timeout. Give it back with :meth:`release`."""

    @abc.abstractmethod
    def release(self, base_url: str, connection: Any) -> None:
        """Give back a connection from :meth:`acquire`."""

    @abc.abstractmethod
    def get_stats(self) -> dict[str, Any]:
        """A consistent snapshot of the pool's statistics as a plain dict."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close idle connections now and in-use ones when they come back."""

    def __enter__(self) -> IConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
