"""A requests transport adapter that draws from a llmpool ConnectionPool.

Mount it on a ``requests.Session`` and the session's requests share the
pool's per-host caps, keep-alive rules, stale-connection retry and
statistics with every other user of the pool::

    session = requests.Session()
    session.mount("https://", PooledHTTPAdapter(pool))
    session.mount("http://", PooledHTTPAdapter(pool))

Importing this module imports requests; ``import llmpool`` does not.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import requests
import requests.adapters

from llmpool.exceptions import LLMPoolError, TransportError
from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.response import Response
from llmpool.pool.transport import (
    DeadlineTimeout,
    check_deadline,
    describe_error,
    map_error,
)
from llmpool.redaction import redact_url

__all__ = ["PooledHTTPAdapter", "RequestsTransport", "map_requests_error"]


class PooledHTTPAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` adapter whose connections come from a shared :class:`~llmpool.ConnectionPool`.

    Thread-safe to the same degree as a ``requests.Session`` (sessions are not
    documented as thread-safe; the pool under them is). TLS settings come
    from the pool's :class:`~llmpool.PoolConfig` (``verify``, ``ca_certs``,
    client certificates), never from per-request ``verify=``/``cert=``
    arguments, so one SSLContext serves every connection. urllib3's own
    retries are off: ``max_retries`` is ignored. Closing the adapter (or the
    session) does not close the shared pool.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.llm_pool = pool
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """No private PoolManager: connections come from the shared pool."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: Any = None,
        cert: Any = None,
    ) -> Any:
        """The shared pool's host pool for the request's URL."""
        return self.llm_pool.host_pool(str(request.url))

    def get_connection(self, url: str | bytes, proxies: Any = None) -> Any:
        """The shared pool's host pool for *url* (older requests versions)."""
        return self.llm_pool.host_pool(url.decode() if isinstance(url, bytes) else url)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """TLS settings belong to the pool's config; per-request ones are ignored."""

    def close(self) -> None:
        """Release nothing: the shared pool outlives the adapter."""


def map_requests_error(exc: BaseException, url: str = "") -> LLMPoolError:
    """Translate a ``requests`` exception into llmpool's tree, by its cause.

    Like :func:`~llmpool.pool.transport.map_error`, the message never copies
    text that may hold a header value (requests quotes an invalid one) and
    shows *url* redacted.
    """
    if isinstance(exc, LLMPoolError):
        return exc
    cause: BaseException | None = exc
    while isinstance(cause, requests.RequestException):
        inner = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        if inner is None:
            shown = redact_url(url) if url else ""
            where = f" ({shown})" if shown else ""
            return TransportError(f"{describe_error(cause)}{where}", url=shown)
        cause = inner
    reason = getattr(cause, "reason", None)
    if isinstance(reason, BaseException):  # urllib3 MaxRetryError
        cause = reason
    return map_error(cause or exc, url)


class RequestsTransport:
    """Sends the client's requests through a ``requests.Session`` mounted with
    :class:`PooledHTTPAdapter`, so tests can mock llmpool with the
    ``responses`` library while sharing the pool and its statistics.

    Thread-safe for the client's use: each call runs on a session that this
    transport keeps per thread (requests does not document ``Session`` as
    thread-safe).
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._local = threading.local()

    def session(self) -> requests.Session:
        """This thread's session, mounted on the shared pool."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # proxies and CA bundles come from PoolConfig
            adapter = PooledHTTPAdapter(self.pool)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

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
    ) -> Response:
        """Like :meth:`ConnectionPool.request`, through requests: *deadline*
        (a ``time.monotonic()`` instant) bounds every read the same way.
        requests has no pool wait of its own: *pool_timeout* is not used, the
        pool's configured ``pool_timeout`` applies."""
        cfg = self.pool.config
        read = timeout if timeout is not None else cfg.effective_read_timeout
        connect = min(read, cfg.effective_connect_timeout)
        timeouts: Any = (connect, read)
        if deadline is not None:
            connect = min(connect, check_deadline(deadline, url))
            timeouts = DeadlineTimeout(connect=connect, read=read, deadline=deadline)
        try:
            reply = self.session().request(
                method,
                url,
                data=body,
                headers=dict(headers or {}),
                timeout=timeouts,
                stream=True,
                allow_redirects=False,
            )
        except Exception as exc:
            raise map_requests_error(exc, url) from exc
        response = Response(reply.raw, url, bool(getattr(reply.raw, "llm_reused", False)))
        if not stream:
            response.read()
        return response

    def get_stats(self) -> dict[str, Any]:
        """The shared pool's statistics."""
        return self.pool.get_stats()

    def close_idle(self) -> int:
        """Close the shared pool's idle connections; return how many."""
        return self.pool.close_idle()

    def close(self) -> None:
        """Nothing of its own to release: the pool belongs to its owner."""
