"""The one boundary between llmpool and urllib3.

This is the only module that imports ``urllib3.exceptions``. It holds:

- the urllib3 subclasses that give the pool real caps and statistics: a
  connection that knows when it was opened and how many requests it served,
  and a host pool whose checkout closes expired connections, whose return
  keeps at most ``max_keepalive`` idle connections, and whose ``urlopen``
  retries a request once on a fresh connection when a *reused* keep-alive
  socket turned out dead before any response byte arrived;
- :func:`map_error`, which turns any urllib3 / ``http.client`` / socket error
  into llmpool's own tree (``raise map_error(exc, url) from exc``);
- :class:`Response`, the raw response llmpool hands out, whose reads map
  errors the same way.

Thread safety: host pools and the pool manager are shared by all threads
(urllib3's LifoQueue hands out connections); statistics updates take the
pool's lock for a few microseconds. A :class:`Response` is confined to the
thread that made it.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import queue as queues
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from urllib3 import exceptions as u3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from llmpool import exceptions as errors
from llmpool.config import PoolConfig
from llmpool.pool import connections
from llmpool.pool.connections import TrackedHTTPConnection, TrackedHTTPSConnection
from llmpool.pool.stats import HostStats
from llmpool.redaction import redact_url

__all__ = [
    "NO_RETRY",
    "DeadlineTimeout",
    "check_deadline",
    "describe_error",
    "map_error",
    "now",
]

log = logging.getLogger(__name__)

#: urllib3 never retries or redirects on its own: llmpool's policy decides.
NO_RETRY = Retry(total=False, redirect=False, raise_on_redirect=False)


def now() -> float:
    """The transport's monotonic clock (one clock for ages, idle times and leaks:
    ``llmpool.pool.connections._now``, which tests move by hand)."""
    return connections._now()


# --------------------------------------------------------------------------- host pools


def _expired(cfg: PoolConfig, conn: Any, now: float) -> bool:
    """Idle past keepalive_expiry, or older than max_connection_age."""
    if cfg.keepalive_expiry is not None and now - conn.llm_last_used > cfg.keepalive_expiry:
        return True
    return cfg.max_connection_age is not None and now - conn.llm_opened > cfg.max_connection_age


def _replayable(body: Any) -> bool:
    return body is None or isinstance(body, (bytes, str))


def _tag(exc: BaseException, reused: bool, responded: bool) -> None:
    """Record on *exc* what its exchange learnt (see ``_make_request``)."""
    # An exception type without a __dict__ keeps nothing: treated as fresh.
    with contextlib.suppress(AttributeError):
        exc.llm_exchange = (reused, responded)  # type: ignore[attr-defined]


def _exchange_of(exc: BaseException) -> tuple[bool, bool]:
    """``(reused, responded)`` of the exchange that raised *exc* (urllib3 may
    have wrapped the error it raised in a ProtocolError)."""
    for candidate in (exc, exc.args[1] if len(exc.args) > 1 else None, exc.__context__):
        found = getattr(candidate, "llm_exchange", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return False, False


def _is_stale(exc: BaseException) -> bool:
    """A dead keep-alive socket: the peer closed or reset it before answering."""
    if isinstance(exc, u3.ProtocolError) and not isinstance(exc, u3.ReadTimeoutError):
        cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
        return isinstance(
            cause,
            (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                ConnectionAbortedError,
            ),
        )
    return False


_base_urlopen: Any = HTTPConnectionPool.urlopen


class _TrackedPool:
    """Mixin for urllib3 host pools: expiry, keep-alive cap, stats, stale retry."""

    llm_stats: HostStats
    llm_config: PoolConfig
    llm_leak_check: Callable[[], None] | None = None
    pool: Any

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        conn.llm_stats = self.llm_stats
        return conn

    def _get_conn(self, timeout: float | None = None) -> Any:
        started = connections._now()
        try:  # a free slot at once (the common case): nobody waits, no gauge moves
            conn, waited = self.pool.get(block=False), False
        except (queues.Empty, AttributeError):  # none free, or closed (pool is None)
            conn, waited = self._wait_for_conn(timeout), True
        now = connections._now()
        if conn is not None and conn.sock is not None:
            self._check_idle(conn, now)
        if conn is None:
            conn = self._new_conn()
        conn.llm_waited = now - started
        self.llm_stats.checked_out(conn.llm_waited, conn, now, queued=waited)
        if self.llm_leak_check is not None:
            self.llm_leak_check()
        return conn

    def _wait_for_conn(self, timeout: float | None) -> Any:
        """Wait up to *timeout* (None: the config's) for a free slot, counted waiting."""
        timeout = self.llm_config.effective_pool_timeout if timeout is None else timeout
        self.llm_stats.wait_started()
        try:
            queue = self.pool
            if queue is None:
                raise u3.ClosedPoolError(self, "Pool is closed.")  # type: ignore[arg-type]
            try:
                return queue.get(block=True, timeout=timeout)
            except Exception as exc:  # queue.Empty
                raise u3.EmptyPoolError(
                    self,  # type: ignore[arg-type]
                    f"no free connection within {timeout}s "
                    f"(max_connections={self.llm_config.max_connections})",
                ) from exc
        except BaseException:
            self.llm_stats.checkout_failed()
            raise

    def _check_idle(self, conn: Any, now: float) -> None:
        """Close an idle connection that must not be reused."""
        cfg = self.llm_config
        if _expired(cfg, conn, now):
            reason = "expired_closed"
        elif not conn.is_connected:
            reason = "dropped_closed"
        else:
            return
        conn.close()
        self.llm_stats.count(reason)

    def _put_conn(self, conn: Any) -> None:
        stats = self.llm_stats
        if conn is None:
            # urlopen closed a connection after an error and gives its slot back;
            # _make_request (or _prepare_proxy) already counted it returned.
            pass
        else:
            conn.llm_last_used = connections._now()
            conn.llm_budget.deadline = None
            response, conn.llm_response = conn.llm_response, None
            stats.returned(conn)
            if conn.sock is not None:
                if response is not None and not response.isclosed():
                    conn.close()  # a reply not read to its end must never be reused
                elif self._over_keepalive():
                    conn.close()
                    stats.count("discarded")
        super()._put_conn(conn)  # type: ignore[misc]

    def _make_request(
        self,
        conn: Any,
        method: str,
        url: str,
        *args: Any,
        llm_fresh: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One exchange on *conn*: its reads are bounded by the deadline that
        a :class:`DeadlineTimeout` carries (none for a plain Timeout).

        What the exchange learnt travels up on what it returns, never through
        shared state: the response carries ``llm_reused``; an error carries
        ``llm_exchange = (reused, responded)``, read by :meth:`urlopen`'s
        stale-connection check. *llm_fresh* (the stale re-send) never reuses
        an idle socket. A failed exchange gives its slot back to the
        statistics here, where the connection is known.
        """
        if llm_fresh and conn.sock is not None and conn.llm_served > 0:
            conn.close()  # the re-send after a stale socket goes out on a new one
        reused = conn.llm_served > 0 and conn.sock is not None
        conn.llm_responded = False
        conn.llm_budget.deadline = getattr(kwargs.get("timeout"), "llm_deadline", None)
        try:
            response = super()._make_request(conn, method, url, *args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            _tag(exc, reused, conn.llm_responded)
            self.llm_stats.returned(conn)
            raise
        response.llm_reused = reused
        response.llm_pool_wait = conn.llm_waited
        return response

    def _prepare_proxy(self, conn: Any) -> None:
        try:
            super()._prepare_proxy(conn)  # type: ignore[misc]
        except BaseException:
            self.llm_stats.returned(conn)  # urlopen drops it: its slot is free again
            raise

    def _over_keepalive(self) -> bool:
        keep = self.llm_config.max_keepalive
        return keep < self.llm_config.max_connections and self.idle_count() >= keep

    def idle_count(self) -> int:
        """Idle connections with an open socket (a gauge)."""
        queue = self.pool
        if queue is None:
            return 0
        return sum(1 for c in list(queue.queue) if c is not None and c.sock is not None)

    def close_idle(self) -> int:
        """Close every idle connection (memory pressure); return how many.

        Thread-safe: the idle connections are taken *out* of the queue first
        (non-blocking gets), so no other thread can check one out while it is
        closed; each slot goes back as a ``None`` placeholder (a new
        connection on demand), so the cap stays the same. Connections other
        threads hold are never in the queue, never touched.
        """
        queue = self.pool
        if queue is None:
            return 0
        to_close = []
        taken = []
        while True:
            try:
                taken.append(queue.get(block=False))
            except queues.Empty:
                break
        for conn in reversed(taken):  # LIFO: put back in the order found
            if conn is not None and conn.sock is not None:
                to_close.append(conn)
                queue.put(None, block=False)
            else:
                queue.put(conn, block=False)
        for conn in to_close:
            conn.close()
        return len(to_close)

    def urlopen(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *_ignored: Any,
        **kwargs: Any,
    ) -> Any:
        """One exchange; retried once on a fresh socket when a reused one was dead.

        urllib3's own retries and redirects are always off: llmpool's policy
        (and, through the adapter, requests') decides.
        """
        kwargs["retries"] = NO_RETRY
        kwargs["redirect"] = False
        started = connections._now()
        try:
            try:
                response = _base_urlopen(self, method, url, body, headers, **kwargs)
            except u3.ProtocolError as exc:
                reused, responded = _exchange_of(exc)
                if not (reused and not responded and _is_stale(exc) and _replayable(body)):
                    raise
                self.llm_stats.count("stale_retries")
                log.debug(
                    "retrying %s %s on a fresh connection after %s",
                    method,
                    redact_url(url),
                    type(exc.args[1] if len(exc.args) > 1 else exc).__name__,
                )
                response = _base_urlopen(self, method, url, body, headers, llm_fresh=True, **kwargs)
        except BaseException as exc:
            self.llm_stats.exchange_done(ok=False, reused=_exchange_of(exc)[0], latency=None)
            raise
        self.llm_stats.exchange_done(
            ok=True, reused=response.llm_reused, latency=connections._now() - started
        )
        return response


class TrackedHTTPPool(_TrackedPool, HTTPConnectionPool):
    """An HTTP host pool with llmpool's checkout rules and statistics."""

    ConnectionCls = TrackedHTTPConnection


class TrackedHTTPSPool(_TrackedPool, HTTPSConnectionPool):
    """An HTTPS host pool with llmpool's checkout rules and statistics."""

    ConnectionCls = TrackedHTTPSConnection


# --------------------------------------------------------------------------- errors


def map_error(exc: BaseException, url: str = "") -> errors.LLMPoolError:
    """Translate an urllib3, ``http.client`` or socket error into llmpool's tree.

    Use as ``raise map_error(exc, url) from exc`` so the cause stays chained.
    An error that is already llmpool's is returned unchanged; anything else
    (even an unexpected ``AttributeError``) becomes a
    :class:`~llmpool.exceptions.TransportError`. The message and the error's
    ``url`` show *url* through :func:`~llmpool.redaction.redact_url`, and the
    lower error's text only when it cannot hold a header value (see
    :func:`describe_error`).
    """
    if isinstance(exc, errors.LLMPoolError):
        return exc
    shown = redact_url(url) if url else ""
    where = f" ({shown})" if shown else ""
    cls = _error_class(exc)
    return cls(f"{describe_error(exc)}{where}", url=shown)


def _error_class(exc: BaseException) -> type[errors.TransportError]:
    if isinstance(exc, u3.EmptyPoolError):
        return errors.PoolTimeout
    if isinstance(exc, u3.ClosedPoolError):
        return errors.PoolClosed
    if isinstance(exc, (u3.SSLError, *_ssl_errors())):
        return errors.TLSError
    if isinstance(exc, (u3.NewConnectionError, u3.ProxyError)):
        return errors.ConnectError
    if isinstance(exc, u3.ConnectTimeoutError):
        return errors.ConnectTimeout
    if isinstance(exc, (u3.ReadTimeoutError, socket.timeout, TimeoutError)):
        return errors.ReadTimeout
    if isinstance(exc, u3.ProtocolError):
        cause = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(cause, (socket.timeout, TimeoutError)):
            return errors.ReadTimeout
        return errors.ProtocolError
    if isinstance(exc, (u3.HTTPError, http.client.HTTPException, OSError)):
        return errors.ProtocolError
    return errors.TransportError


def _ssl_errors() -> tuple[type[BaseException], ...]:
    import ssl

    return (ssl.SSLError, ssl.CertificateError)


#: Said instead of the text of a lower error that may hold a header value.
_WITHHELD = "details withheld (the text may hold a header value or a credential)"


def _text_is_safe(exc: BaseException) -> bool:
    """Whether *exc*'s text may be shown: network and HTTP errors say what the
    peer or the socket did; value and type errors (``Invalid header value
    b'Bearer ...'``, an unencodable header, an invalid URL) may quote what the
    caller sent, secrets included."""
    if isinstance(exc, _ssl_errors()):
        return True
    if isinstance(exc, (ValueError, TypeError, http.client.InvalidURL)):
        return False
    return isinstance(exc, (OSError, u3.HTTPError, http.client.HTTPException))


def describe_error(exc: BaseException) -> str:
    """A one-line description of a lower error, fit for an error message.

    Network errors keep their text; any other error (``ValueError``,
    ``TypeError``, ``UnicodeEncodeError``, ``http.client.InvalidURL``...)
    is described by its class name and a fixed phrase only.
    """
    name = type(exc).__name__
    if not _text_is_safe(exc):
        return f"{name}: {_WITHHELD}"
    if isinstance(exc, u3.EmptyPoolError):
        return str(exc.args[-1]) if exc.args else "connection pool exhausted"
    if isinstance(exc, u3.ProtocolError) and len(exc.args) > 1:
        cause = exc.args[1]
        if isinstance(cause, BaseException) and not _text_is_safe(cause):
            return f"connection broken: {type(cause).__name__} ({_WITHHELD})"
        return f"connection broken: {cause!r}"
    if isinstance(exc, u3.NewConnectionError):
        return f"could not connect: {exc}"
    text = str(exc) or name
    return f"{name}: {text}" if name not in text else text


def check_deadline(deadline: float, url: str) -> float:
    """Seconds left before *deadline* (a ``time.monotonic()`` instant); raise
    :class:`~llmpool.exceptions.ReadTimeout` when it has passed, so nothing
    is sent whose answer could no longer be read."""
    left = deadline - time.monotonic()
    if left <= 0:
        shown = redact_url(url)
        raise errors.ReadTimeout(
            f"the call's deadline passed before the request was sent ({shown})", url=shown
        )
    return left


class DeadlineTimeout(urllib3.Timeout):
    """A urllib3 ``Timeout`` that also carries an exchange's deadline (an
    absolute ``time.monotonic()`` instant): every read of the exchange waits
    at most min(read timeout, time left). Immutable like its base; its clones
    keep the deadline (urllib3 clones a Timeout per request)."""

    def __init__(self, *, connect: float | None, read: float | None, deadline: float) -> None:
        super().__init__(connect=connect, read=read)
        self.llm_deadline = deadline

    def clone(self) -> DeadlineTimeout:
        """A copy with the same timeouts and deadline."""
        return DeadlineTimeout(
            connect=self._connect,  # type: ignore[arg-type]
            read=self._read,  # type: ignore[arg-type]
            deadline=self.llm_deadline,
        )
