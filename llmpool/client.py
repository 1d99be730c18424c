"""Client: the public face that ties the pool, providers, plugins and memory together.

Construction, options, the calls users make (``chat``, ``complete``,
``embed``, ``models``), statistics and closing live here; the steps of a call
live in :mod:`llmpool.request_path`, which the client inherits.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from llmpool.calls import Calls
from llmpool.config import MemoryConfig, PoolConfig
from llmpool.endpoints.model import Endpoint, HealthConfig
from llmpool.endpoints.routing import Strategy
from llmpool.exceptions import (
    ConfigError,
)
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.group import EndpointGroup, HealthChecks, make_group
from llmpool.memory.state import MemoryState
from llmpool.options import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_STREAM_TEXT,
    OPTION_NAMES,
    ClientOptions,
    parse_base_url,
)
from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.interfaces import Transport
from llmpool.providers import Provider, load_provider
from llmpool.redaction import redact_url
from llmpool.retry import RetryPolicy
from llmpool.routes import make_route
from llmpool.state import StateBackend, StateConfig, open_backend
from llmpool.validators import TRANSPORTS
from llmpool.wiring import make_memory, make_plugins, make_pool, resolve_base_url

if TYPE_CHECKING:
    from llmpool.config import ClientConfig
    from llmpool.memory import MemoryManager
    from llmpool.plugins import PluginManager

__all__ = ["Client"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _same(transport: Transport) -> Transport:
    return transport


def _requests_wrapper(pool: Transport) -> Callable[[Transport], Transport]:
    """``transport='requests'``: each ConnectionPool reached through requests."""
    if not isinstance(pool, ConnectionPool):
        raise ConfigError(
            "transport='requests' needs a llmpool ConnectionPool as pool", key="transport"
        )
    from llmpool.pool.adapter import RequestsTransport

    def wrap(transport: Transport) -> Transport:
        assert isinstance(transport, ConnectionPool)
        return RequestsTransport(transport)

    return wrap


class Client(Calls):
    """A client for an OpenAI-compatible or Anthropic API.

    Thread-safe: build **one** per process and share it between all threads
    (a client per request would open a connection, and a TLS context, per
    request). Calls from many threads go through one
    :class:`~llmpool.ConnectionPool`; a :class:`~llmpool.streaming.Stream` it
    returns is confined to the thread that made it.

    *pool* is a :class:`~llmpool.ConnectionPool`, or any other
    :class:`~llmpool.pool.interfaces.Transport` (your own pool, a recording
    transport in tests; shared: the client does not close it), a
    :class:`~llmpool.PoolConfig`, or None (the client builds and owns a
    ConnectionPool). *memory* is a :class:`~llmpool.MemoryConfig` (the client starts
    and owns a :class:`~llmpool.MemoryManager`) or a manager to share.
    *plugins* is a list of plugin names (loaded through the ``llmpool.plugins``
    entry points, overridden by ``LLMPOOL_PLUGINS``) or plugin objects, or a
    :class:`~llmpool.PluginManager`. *timeout* bounds each attempt's connect
    and reads; *deadline* bounds a whole call, retries and waits included.
    *state* is a :class:`~llmpool.StateConfig` (the client builds and owns
    the backend: in-process by default, Redis to share rate limits and the
    cache between processes) or a :class:`~llmpool.state.StateBackend` to share.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        provider: str | Provider | type[Provider] = "openai",
        pool: Transport | PoolConfig | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        plugins: PluginManager | Sequence[Any] | None = None,
        memory: MemoryManager | MemoryConfig | None = None,
        transport: str = "urllib3",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_stream_text: int | None = DEFAULT_MAX_STREAM_TEXT,
        follow_redirects: bool = False,
        plugin_settings: Mapping[str, Mapping[str, Any]] | None = None,
        plugin_dirs: Sequence[str] = (),
        plugins_strict: bool = False,
        provider_options: Mapping[str, Any] | None = None,
        endpoints: Sequence[Endpoint | Mapping[str, Any]] | None = None,
        routing: str | Strategy = "default",
        health: HealthConfig | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        context_window_fallbacks: Mapping[str, Sequence[str]] | None = None,
        state: StateBackend | StateConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(
                f"transport must be 'urllib3' or 'requests', got {transport!r}",
                key="transport",
                value=transport,
            )
        if endpoints is not None and (base_url is not None or api_key is not None):
            raise ConfigError(
                "give base_url and api_key, or endpoints (each with its own api_key or "
                "api_key_env), not both",
                key="endpoints",
            )
        self._options = ClientOptions(
            timeout=timeout,
            deadline=deadline,
            retry=RetryPolicy() if retry is None else retry,
            max_response_bytes=max_response_bytes,
            max_stream_text=max_stream_text,
            follow_redirects=follow_redirects,
        )
        self._group = None
        self._is_clone = False
        if endpoints is None:
            self._provider = load_provider(
                provider,
                api_key=api_key,
                default_headers=default_headers,
                **dict(provider_options or {}),
            )
            base_url = resolve_base_url(base_url, self._provider)
            parse_base_url(base_url, self._provider.api_path)  # refuse a bad URL before the pool
        self._sleep = sleep
        # Guards _counters only (microseconds; no I/O under it).
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {"calls": 0, "errors": 0, "retries": 0}
        self._errors: dict[str, int] = {}
        self._closed = False
        self._pool, self._owns_pool = make_pool(pool)
        self.transport = transport
        try:
            wrap = _requests_wrapper(self._pool) if transport == "requests" else _same
            if endpoints is None:
                self._route = make_route(None, self._provider, base_url or "", wrap(self._pool))
            else:
                self._group = make_group(
                    endpoints,
                    shared=self._pool,
                    pool_config=pool if isinstance(pool, PoolConfig) else None,
                    provider_options=provider_options,
                    default_headers=default_headers,
                    routing=routing,
                    health=health,
                    fallbacks=fallbacks,
                    context_fallbacks=context_window_fallbacks,
                    on_change=self._endpoint_changed,
                    wrap=wrap,
                )
                self._route = next(iter(self._group.routes.values()))
                self._provider = self._route.provider
            self._state, self._owns_state = open_backend(state)
        except BaseException:
            self._close_group()
            if self._owns_pool:
                self._pool.close()
            raise
        self.base_url = self._route.base_url
        try:
            self._plugins, self._owns_plugins = make_plugins(
                plugins, plugin_settings, plugin_dirs, strict=plugins_strict, state=self._state
            )
        except BaseException:
            if self._owns_state:
                self._state.close()
            self._close_group()
            if self._owns_pool:
                self._pool.close()  # nothing else to undo: plugins load before the memory thread
            raise
        self._memory, self._owns_memory = make_memory(memory)
        if self._memory is not None:
            self._wire_memory(self._memory)
        if self._group is not None:
            self._group.share_cooldowns(self._state)
            self._start_checks(self._group)
        reset_after_fork(self, renew_lock)  # a parent thread may have held it

    # -- construction helpers ----------------------------------------------------------

    @classmethod
    def from_config(cls, source: str | Mapping[str, Any] | ClientConfig | None = None) -> Client:
        """Build a client from a YAML file, a dict or a :class:`~llmpool.ClientConfig`
        (see :func:`llmpool.load_config`; environment variables apply)."""
        from llmpool.config_loading import ClientConfig, load_config

        config = source if isinstance(source, ClientConfig) else load_config(source)
        return cls(**config.client_kwargs())

    def with_options(self, **overrides: Any) -> Client:
        """A client like this one with some options changed, sharing the same
        pool, plugins and memory manager (closing it closes none of them).

        Accepts ``timeout``, ``retry``, ``deadline``, ``max_response_bytes``,
        ``max_stream_text``, ``follow_redirects`` and ``default_headers``.
        """
        allowed = OPTION_NAMES
        unknown = set(overrides) - allowed - {"default_headers"}
        if unknown:
            raise ConfigError(
                f"with_options() does not accept {sorted(unknown)}; allowed: "
                f"{sorted(allowed | {'default_headers'})}",
                key=sorted(unknown)[0],
            )
        clone = copy.copy(self)
        clone._owns_pool = clone._owns_plugins = clone._owns_memory = False
        clone._is_clone = True
        clone._owns_state = False
        clone._lock = threading.Lock()
        clone._counters = dict.fromkeys(self._counters, 0)
        clone._errors = {}
        reset_after_fork(clone, renew_lock)
        changes = {name: overrides[name] for name in allowed & set(overrides)}
        if "retry" in changes and changes["retry"] is None:
            changes["retry"] = RetryPolicy()
        clone._options = attrs.evolve(self._options, **changes)
        if "default_headers" in overrides:
            headers = overrides["default_headers"]
            clone._route = self._route.with_headers(headers)
            clone._provider = clone._route.provider
            if self._group is not None:
                clone._group = self._group.with_headers(headers)
                clone._route = clone._group.routes[self._route.name or ""]
                clone._provider = clone._route.provider
        return clone

    def _wire_memory(self, memory: MemoryManager) -> None:
        pool = self._pool

        def pool_gauge() -> dict[str, int]:
            stats = pool.get_stats()
            return {"in_use": stats.get("in_use", 0), "idle": stats.get("idle", 0)}

        memory.register_gauge("pool", pool_gauge)
        memory.on_pressure(self._on_memory_pressure)

    def _on_memory_pressure(self, level: Any, report: Any) -> None:
        """Memory pressure: from the shed level up, close idle connections; tell plugins."""
        if level >= MemoryState.SHED:
            closed = self._pool.close_idle()
            if self._group is not None:
                closed += self._group.close_idle()
            log.info("memory pressure (%s): closed %d idle connections", level, closed)
        if self._plugins is not None and self._plugins.has("on_memory_pressure"):
            self._plugins.on_memory_pressure(level, report)

    def stats(self) -> dict[str, Any]:
        """``{"client": ..., "pool": ..., "memory": ..., "plugins": ...}`` as plain
        dicts, and ``"endpoints"`` (per endpoint) for a client over a group.

        Thread-safe; never contains the API key.
        """
        with self._lock:
            client: dict[str, Any] = dict(self._counters)
            client["errors_by_type"] = dict(self._errors)
        stats: dict[str, Any] = {
            "client": client,
            "pool": self._pool.get_stats(),
            "memory": self._memory.stats() if self._memory is not None else {},
            "plugins": self._plugins.stats() if self._plugins is not None else {},
            "state": self._state.stats(),
        }
        if self._group is not None:
            stats["endpoints"] = self._group.stats()
        return stats

    @property
    def options(self) -> ClientOptions:
        """The options this client's calls use (an immutable value)."""
        return self._options

    @property
    def pool(self) -> Transport:
        """The connection pool (or transport) this client sends through."""
        return self._pool

    @property
    def plugins(self) -> PluginManager | None:
        """The plugin manager (None when the client has no plugins)."""
        return self._plugins

    @property
    def memory(self) -> MemoryManager | None:
        """The memory manager (None when the client has none)."""
        return self._memory

    @property
    def state(self) -> StateBackend:
        """The shared-state backend the plugins use (in-process by default)."""
        return self._state

    @property
    def provider(self) -> Provider:
        """The provider that shapes requests and parses responses."""
        return self._provider

    def close(self) -> None:
        """Close what the client owns (its pool, memory manager, plugins). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_plugins and self._plugins is not None:
            self._plugins.close()
        if self._owns_memory and self._memory is not None:
            self._memory.close()
        if self._owns_state:
            self._state.close()
        self._close_group()
        if self._owns_pool:
            self._pool.close()

    def _close_group(self) -> None:
        """Stop the group's checks and close the pools its endpoints own
        (not from a with_options() clone, which shares them)."""
        if self._group is not None and not self._is_clone:
            self._group.close()

    def _start_checks(self, group: EndpointGroup) -> None:
        """Start the group's active checks when configured (one thread)."""
        interval = group.book.config.check_interval
        if interval is not None:
            group.checks = HealthChecks(group.book, self._check_endpoint, interval)
            group.checks.start()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints of the client's group (empty for a plain client)."""
        return () if self._group is None else self._group.endpoints

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<llmpool.Client provider={self._provider.name!r} "
            f"base_url={redact_url(self.base_url)!r} "
            f"transport={self.transport!r}>"
        )
