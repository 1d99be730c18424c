"""The connection pool interface (the seed's ``IConnectionPool``)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

__all__ = ["IConnectionPool"]


class IConnectionPool(abc.ABC):
    """What llmpool's client needs from a connection pool.

    Implementations are shared by every thread of a process and must be
    thread-safe. They are context managers: leaving the ``with`` block closes
    the pool.
    """

    @abc.abstractmethod
    def acquire(self, base_url: str) -> Any:
        """Check out a raw connection to *base_url*'s host, waiting up to the
        pool timeout. Give it back with :meth:`release`."""

    @abc.abstractmethod
    def release(self, base_url: str, connection: Any) -> None:
        """Give back a connection from :meth:`acquire`."""

    @abc.abstractmethod
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
    ) -> Any:
        """Send one request over a pooled connection and return the response.

        With ``stream=False`` the body is read before returning and the
        connection is back in the pool; with ``stream=True`` the caller reads
        the body and must close the response.

        *timeout* bounds the connect and each read; *pool_timeout* can only
        shorten the configured wait for a free connection. *deadline* is an
        absolute ``time.monotonic()`` instant that bounds every read of this
        exchange (headers, body, stream reads, drain): each waits at most
        min(read timeout, time left), and once it has passed a read raises
        :class:`~llmpool.exceptions.ReadTimeout` at once. Thread-safe.
        """

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
