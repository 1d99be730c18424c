"""ConnectionPool: one urllib3 PoolManager shared by every thread.

The pool's own state (the host registry, statistics, the closed flag) is
guarded by one ``RLock``, held for microseconds and never across network
I/O, a sleep or a logging call. urllib3's per-host LifoQueue hands out the
connections themselves.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection

from llmpool.config import PoolConfig, config_from_keywords
from llmpool.exceptions import ConfigError, PoolClosed
from llmpool.forking import reset_after_fork
from llmpool.pool import transport
from llmpool.pool.interfaces import IConnectionPool
from llmpool.pool.managers import make_pool_manager
from llmpool.pool.response import Response
from llmpool.pool.stats import COUNTERS, HISTOGRAMS, HostStats, merge_snapshots
from llmpool.pool.transport import (
    DeadlineTimeout,
    check_deadline,
    map_error,
)
from llmpool.redaction import redact_url

__all__ = ["ConnectionPool"]

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[str, str, str, int, str]:
    """``url`` -> (host key, scheme, host, port, path?query). Cached: a client
    sends to a handful of URLs, so this is a dict lookup after the first call."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        shown = redact_url(url)
        raise ConfigError(f"not an http(s) URL: {shown!r}", key="base_url", value=shown)
    host = parts.hostname
    port = parts.port or _DEFAULT_PORTS[scheme]
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return f"{scheme}://{host}:{port}", scheme, host, port, path


def tcp_keepalive_options(config: PoolConfig) -> list[tuple[int, int, int]]:
    """urllib3's default socket options plus TCP keep-alive when configured."""
    options = list(HTTPConnection.default_socket_options)
    if not config.tcp_keepalive:
        return options
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    idle_opt = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for opt, value in (
        (idle_opt, config.tcp_keepidle),
        (getattr(socket, "TCP_KEEPINTVL", None), config.tcp_keepintvl),
        (getattr(socket, "TCP_KEEPCNT", None), config.tcp_keepcnt),
    ):
        if opt is not None:
            options.append((socket.IPPROTO_TCP, opt, value))
    return options


def build_ssl_context(config: PoolConfig) -> ssl.SSLContext:
    """One SSLContext for every HTTPS connection of a pool.

    Loading a CA bundle costs milliseconds; urllib3 would reload it for every
    new connection when given a path, so the pool builds the context once.
    """
    try:
        context = ssl.create_default_context(cafile=config.ca_certs)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}", key="ca_certs") from exc
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ConnectionPool(IConnectionPool):
    """Pooled HTTP(S) connections to LLM servers, shared by every thread.

    One per process: build it once and hand it to every :class:`~llmpool.Client`
    (or let the client build its own). Thread-safe: any number of threads may
    call :meth:`request`, :meth:`acquire`, :meth:`release` and
    :meth:`get_stats` at once. ``max_connections`` per host is a real cap:
    when every connection is busy a caller waits up to ``pool_timeout``, then
    gets :class:`~llmpool.exceptions.PoolTimeout`. It survives ``os.fork()``:
    the child starts with fresh locks and no inherited sockets.

    Configure it with a :class:`~llmpool.PoolConfig` or, as the original
    design wrote it, with the same fields as keywords:
    ``ConnectionPool(max_connections=10, max_keepalive=10, timeout=30.0)``.
    The keywords build a ``PoolConfig`` (same validation); giving both, or a
    keyword that is not a ``PoolConfig`` field, raises
    :class:`~llmpool.exceptions.ConfigError` naming it.
    """

    def __init__(self, config: PoolConfig | None = None, **options: Any) -> None:
        self.config = config_from_keywords(PoolConfig, config, options, owner="ConnectionPool")
        # Guards _hosts, _retired and _closed, and (shared with every HostStats)
        # the statistics. Never held across I/O, sleeps or logging.
        self._lock = threading.RLock()
        self._hosts: dict[str, tuple[Any, HostStats]] = {}
        self._stats: dict[str, HostStats] = {}
        self._retired = dict.fromkeys(COUNTERS, 0)
        self._closed = False
        self._ssl_context: ssl.SSLContext | None = None
        self._socket_options = tcp_keepalive_options(self.config)
        self._next_leak_check = 0.0
        self._manager = self._new_manager()
        cfg = self.config
        self._timeout = urllib3.Timeout(
            connect=cfg.effective_connect_timeout, read=cfg.effective_read_timeout
        )
        reset_after_fork(self, "_after_fork_in_child")
        if cfg.expected_threads and cfg.expected_threads > cfg.max_connections:
            log.warning(
                "max_connections=%d is below the %d threads expected to share the pool: "
                "threads will wait up to pool_timeout=%.1fs for a connection",
                cfg.max_connections,
                cfg.expected_threads,
                cfg.effective_pool_timeout,
            )

    # -- construction ------------------------------------------------------------------

    def _new_manager(self) -> urllib3.PoolManager:
        return make_pool_manager(
            self.config,
            ssl_context=None,
            socket_options=self._socket_options,
            attach=self._attach,
        )

    def _context(self) -> ssl.SSLContext:
        """The pool's one SSLContext, built on first use. Loading the CA files
        happens outside the lock; if two threads race, the first one's wins."""
        context = self._ssl_context
        if context is not None:
            return context
        built = build_ssl_context(self.config)
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = built
            return self._ssl_context

    def _attach(self, host_pool: Any, scheme: str, host: str, port: int) -> None:
        """Called by the manager for every new host pool: wire stats and config."""
        key = f"{scheme}://{host}:{port}"
        with self._lock:
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = HostStats(key, self._lock)
        host_pool.llm_stats = stats
        host_pool.llm_config = self.config
        if self.config.leak_timeout is not None:
            host_pool.llm_leak_check = self._check_leaks
        if scheme == "https":
            host_pool.conn_kw["ssl_context"] = self._context()
            host_pool.ca_certs = None  # the context already trusts them

    def _route(self, url: str) -> tuple[Any, str]:
        """The host pool for *url*, and the path to request."""
        key, scheme, host, port, path = _split(url)
        entry = self._hosts.get(key)
        if entry is not None:
            return entry[0], path
        if self._closed:
            raise _closed_error(url)
        host_pool: Any = self._manager.connection_from_host(host, port, scheme)
        with self._lock:
            self._hosts[key] = (host_pool, host_pool.llm_stats)
            evicted = self._evict_hosts()
        for pool in evicted:
            pool.close()
        return host_pool, path

    def _evict_hosts(self) -> list[Any]:
        """Beyond max_hosts, forget the oldest hosts with nothing in use (lock held).

        Their counters fold into the totals; the caller closes their pools
        after releasing the lock.
        """
        evicted = []
        excess = len(self._hosts) - self.config.max_hosts
        for key, (pool, stats) in list(self._hosts.items()):
            if excess <= 0:
                break
            if stats.in_use:
                continue
            del self._hosts[key]
            self._stats.pop(key, None)
            self._manager.pools.pop(pool.llm_pool_key, None)
            for name in COUNTERS:
                self._retired[name] += stats.counters[name]
            evicted.append(pool)
            excess -= 1
        return evicted

    # -- the interface -----------------------------------------------------------------

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
        """Send one request (see :class:`~llmpool.pool.interfaces.Transport`).

        *timeout* bounds the connect and each read (seconds; default: the
        config's). *pool_timeout* can only shorten the config's wait for a free
        connection (a call's deadline uses it), never lengthen it. *deadline*
        (an absolute ``time.monotonic()`` instant) bounds every read of this
        exchange, the body and a stream's reads included: each waits at most
        min(read timeout, time left), and once it has passed a read raises
        :class:`~llmpool.exceptions.ReadTimeout` at once (as does the call
        itself, sending nothing, when it has passed already).
        Raises only :class:`~llmpool.exceptions.TransportError` subclasses.
        Thread-safe.
        """
        if self._closed:
            raise _closed_error(url)
        host_pool, path = self._route(url)
        wait = self._pool_wait(pool_timeout)
        if deadline is None:
            timeouts = self._timeout if timeout is None else self._timeout_for(timeout)
        else:
            left = check_deadline(deadline, url)
            wait = min(wait, left)
            read = self.config.effective_read_timeout if timeout is None else timeout
            connect = min(read, self.config.effective_connect_timeout, left)
            timeouts = DeadlineTimeout(connect=connect, read=read, deadline=deadline)
        try:
            raw = host_pool.urlopen(
                method,
                path,
                body=body,
                headers=headers,
                timeout=timeouts,
                pool_timeout=wait,
                preload_content=False,
                release_conn=False,
                assert_same_host=False,
            )
        except Exception as exc:
            raise map_error(exc, url) from exc
        response = Response(raw, url, raw.llm_reused)
        if not stream:
            response.read()
        return response

    def _pool_wait(self, pool_timeout: float | None) -> float:
        configured = self.config.effective_pool_timeout
        return configured if pool_timeout is None else min(pool_timeout, configured)

    def _timeout_for(self, timeout: float) -> urllib3.Timeout:
        return urllib3.Timeout(
            connect=min(timeout, self.config.effective_connect_timeout), read=timeout
        )

    def acquire(self, base_url: str) -> Any:
        """Check out a raw urllib3 connection to *base_url*'s host.

        For callers that drive the connection themselves; most code should use
        :meth:`request`. Give it back with :meth:`release`, in a ``finally``.
        """
        if self._closed:
            raise _closed_error(base_url)
        host_pool, _ = self._route(base_url)
        try:
            return host_pool._get_conn()
        except Exception as exc:
            raise map_error(exc, base_url) from exc

    def release(self, base_url: str, connection: Any) -> None:
        """Give back a connection from :meth:`acquire`."""
        key = _split(base_url)[0]
        entry = self._hosts.get(key)
        if entry is None:
            connection.close()
            return
        entry[0]._put_conn(connection)

    def host_pool(self, url: str) -> Any:
        """The urllib3 host pool serving *url* (used by the requests adapter)."""
        if self._closed:
            raise _closed_error(url)
        return self._route(url)[0]

    def close_idle(self) -> int:
        """Close every idle connection now (memory pressure); return how many.

        Thread-safe, and safe while other threads make calls: only connections
        that sit idle in a host's queue are taken out and closed, never one a
        thread holds, and each slot stays (a new connection opens on demand).
        """
        with self._lock:
            pools = [pool for pool, _ in self._hosts.values()]
        closed = 0
        for pool in pools:
            n = pool.close_idle()
            pool.llm_stats.count("idle_closed", n)
            closed += n
        return closed

    def get_stats(self) -> dict[str, Any]:
        """Statistics as a plain dict: totals plus ``hosts`` (one dict per host).

        Counters: total_requests (= successful_requests + failed_requests),
        connections_created, connection_reuses, reuse_rate, stale_retries,
        expired_closed, dropped_closed, discarded, idle_closed, pool_timeouts.
        Gauges: in_use, idle, waiting, peak_in_use, leaked_connections.
        Histograms (seconds): acquire_wait, latency (to response headers); the
        totals' percentiles are over every host's recent values together.
        """
        with self._lock:
            entries = [(key, stats, self._hosts.get(key)) for key, stats in self._stats.items()]
            retired = dict(self._retired)
            closed = self._closed
        now = transport.now()
        leak_after = self.config.leak_timeout
        hosts = {}
        windows: dict[str, list[float]] = {name: [] for name in HISTOGRAMS}
        for key, stats, entry in entries:
            leaked = len(stats.held_longer_than(leak_after, now)) if leak_after else 0
            idle = entry[0].idle_count() if entry is not None else 0
            hosts[key], recent = stats.snapshot_with_windows(idle, leaked)
            for name, values in recent.items():
                windows[name].extend(values)
        out = merge_snapshots(hosts, retired, windows)
        out["closed"] = closed
        out["max_connections"] = self.config.max_connections
        return out

    def _check_leaks(self) -> None:
        """Warn once per connection held longer than leak_timeout (throttled to 1/s)."""
        now = transport.now()
        if now < self._next_leak_check or self.config.leak_timeout is None:
            return
        self._next_leak_check = now + 1.0
        with self._lock:
            entries = [stats for _, stats in self._hosts.values()]
        fresh = []
        for stats in entries:
            for conn in stats.held_longer_than(self.config.leak_timeout, now):
                if not getattr(conn, "llm_leak_warned", True):
                    conn.llm_leak_warned = True  # type: ignore[attr-defined]
                    fresh.append(stats.host)
        for host in fresh:
            log.warning(
                "a connection to %s has been checked out for more than leak_timeout=%.1fs: "
                "is a response or stream left open?",
                host,
                self.config.leak_timeout,
            )

    def close(self) -> None:
        """Close idle connections now; in-use ones close when they come back.

        Idempotent. Later calls raise :class:`~llmpool.exceptions.PoolClosed`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            manager = self._manager
            pools = [pool for pool, _ in self._hosts.values()]
        manager.clear()
        for pool in pools:
            pool.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> ConnectionPool:
        return self

    def __repr__(self) -> str:
        cfg = self.config
        state = "closed" if self._closed else "open"
        hosts = len(self._hosts)
        return f"<ConnectionPool {state} max_connections={cfg.max_connections} hosts={hosts}>"

    # -- fork --------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Fresh lock and manager; the parent's sockets are closed, never shared."""
        old = self._manager
        self._lock = threading.RLock()
        for stats in self._stats.values():
            stats.reset_after_fork(self._lock)
        self._hosts = {}
        self._next_leak_check = 0.0
        if not self._closed:
            self._manager = self._new_manager()
        _close_inherited(old)


def _closed_error(url: str) -> PoolClosed:
    return PoolClosed("the connection pool is closed", url=redact_url(url))


def _close_inherited(manager: urllib3.PoolManager) -> None:
    """Close the parent's sockets in a forked child without taking any lock a
    parent thread may have held at fork time."""
    container = getattr(manager.pools, "_container", {})
    for pool in list(container.values()):
        queue = getattr(pool, "pool", None)
        for conn in list(getattr(queue, "queue", ()) or ()):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
                conn.sock = None
