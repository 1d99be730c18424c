"""The pool managers: one ``urllib3.PoolManager`` (or ``ProxyManager``) per
:class:`~llmpool.ConnectionPool`, whose host pools are llmpool's tracked
ones and are handed their statistics and configuration when created.

Shared by all threads, as urllib3's managers are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import urllib3
from urllib3.connectionpool import HTTPConnectionPool

from llmpool.config import PoolConfig
from llmpool.pool.transport import NO_RETRY, TrackedHTTPPool, TrackedHTTPSPool

__all__ = ["TrackedPoolManager", "TrackedProxyManager", "make_pool_manager"]

_POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {
    "http": TrackedHTTPPool,
    "https": TrackedHTTPSPool,
}


class _Attach:
    """Mixin for pool managers: hand every new host pool its stats and config."""

    llm_attach: ClassVar[Callable[[Any, str, str, int], None]]
    _llm_attach: Callable[[Any, str, str, int], None]

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)  # type: ignore[misc]
        self._llm_attach(pool, scheme, host, port)
        return pool  # type: ignore[no-any-return]

    def connection_from_pool_key(
        self, pool_key: Any, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool: Any = super().connection_from_pool_key(pool_key, request_context)  # type: ignore[misc]
        pool.llm_pool_key = pool_key  # lets the owner forget it on eviction
        return pool  # type: ignore[no-any-return]


class TrackedPoolManager(_Attach, urllib3.PoolManager):
    """A PoolManager whose host pools are :class:`TrackedHTTPPool` / :class:`TrackedHTTPSPool`."""


class TrackedProxyManager(_Attach, urllib3.ProxyManager):
    """A ProxyManager whose host pools are tracked likewise."""


def make_pool_manager(
    config: PoolConfig,
    *,
    ssl_context: Any,
    socket_options: list[tuple[int, int, int]],
    attach: Callable[[Any, str, str, int], None],
) -> urllib3.PoolManager:
    """Build the one PoolManager of a ConnectionPool (or a ProxyManager)."""
    kwargs: dict[str, Any] = {
        "num_pools": config.max_hosts,
        "maxsize": config.max_connections,
        "block": True,
        "retries": NO_RETRY,
        "timeout": urllib3.Timeout(
            connect=config.effective_connect_timeout, read=config.effective_read_timeout
        ),
        "ssl_context": ssl_context,
        "cert_reqs": "CERT_REQUIRED" if config.verify else "CERT_NONE",
        "socket_options": socket_options,
    }
    manager: urllib3.PoolManager
    if config.proxy_url:
        manager = TrackedProxyManager(config.proxy_url, **kwargs)
    else:
        manager = TrackedPoolManager(**kwargs)
    manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
    manager._llm_attach = attach
    return manager
