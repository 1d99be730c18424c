"""An endpoint group as a client holds it: the routes, the health book, the
fallbacks, the pools it owns and the optional active checks.

Built once by :func:`make_group` from ``Client(endpoints=[...])``; the call
steps that use it live in :mod:`llmpool.group_path`. Thread-safe: the routes
and fallbacks are immutable, the health book has its own lock, and the
active checks run on one daemon thread per group.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from llmpool.config import PoolConfig
from llmpool.endpoints.health import HealthBook, Outcome, StateChange
from llmpool.endpoints.model import Endpoint, HealthConfig, check_endpoints, check_fallbacks
from llmpool.endpoints.routing import Strategy, resolve_strategy
from llmpool.exceptions import ConfigError
from llmpool.forking import reset_after_fork
from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.interfaces import Transport
from llmpool.providers import Provider, load_provider
from llmpool.routes import Route, make_route
from llmpool.shared_health import SharedCooldowns
from llmpool.state.base import StateBackend

__all__ = ["EndpointGroup", "HeaderSwap", "HealthChecks", "make_group"]

log = logging.getLogger(__name__)


class HeaderSwap:
    """The change from one provider's headers (*old*) to another's (*new*),
    applied to a request that *old* built and the call then added to.

    A header the call left as *old* gave it takes *new*'s value (or goes,
    when *new* has none); a header the call set or changed keeps the call's
    value and spelling; *new*'s own extra headers are added unless the call
    sent one of the same name (any case). Immutable: thread-safe."""

    __slots__ = ("added", "changed", "dropped", "none", "old")

    def __init__(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        #: *old*'s headers (a request built by it carries exactly these).
        self.old = dict(old)
        self.changed = tuple((n, v, new[n]) for n, v in old.items() if n in new and new[n] != v)
        self.dropped = tuple((n, v) for n, v in old.items() if n not in new)
        self.added = tuple((n, v) for n, v in new.items() if n not in old)
        #: Nothing changes: a request for *old* goes to *new* as it is.
        self.none = not (self.changed or self.dropped or self.added)

    def apply(self, headers: Mapping[str, str]) -> dict[str, str]:
        """A new dict: *headers* as *new* and the call would send them."""
        out = dict(headers)
        for name, old, new in self.changed:
            if out.get(name) == old:
                out[name] = new
        for name, old in self.dropped:
            if out.get(name) == old:
                del out[name]
        if self.added:
            lower = {name.lower() for name in out}
            for name, value in self.added:
                if name.lower() not in lower:
                    out[name] = value
        return out


class EndpointGroup:
    """The endpoints of one client. Thread-safe (see the module docstring)."""

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        routes: Mapping[str, Route],
        book: HealthBook,
        *,
        routing: str,
        fallbacks: Mapping[str, tuple[str, ...]],
        context_fallbacks: Mapping[str, tuple[str, ...]],
        owned: Sequence[Transport],
    ) -> None:
        self.endpoints = endpoints
        self.routes = dict(routes)
        self.book = book
        self.routing = routing
        self.fallbacks = dict(fallbacks)
        self.context_fallbacks = dict(context_fallbacks)
        self.owned = tuple(owned)
        self.checks: HealthChecks | None = None
        #: Cool-downs shared with other processes (a shared state backend only).
        self.shared: SharedCooldowns | None = None
        self._serving: dict[str | None, tuple[str, ...]] = {}
        self._swaps: dict[tuple[int, int, str, bool], tuple[Provider, Provider, HeaderSwap]] = {}

    def serving(self, model: str | None) -> tuple[str, ...]:
        """The names of the endpoints that serve *model*, in the group's order."""
        names = self._serving.get(model)
        if names is None:  # a benign race: two threads may compute the same tuple
            names = tuple(e.name for e in self.endpoints if e.serves(model))
            if len(self._serving) < 10_000:
                self._serving[model] = names
        return names

    def header_swap(self, old: Provider, new: Provider, method: str, stream: bool) -> HeaderSwap:
        """How a *method* request's headers change from provider *old*'s to
        *new*'s (two providers of one type), cached per pair: a provider's
        headers never change."""
        key = (id(old), id(new), method, stream)
        cached = self._swaps.get(key)
        if cached is not None and cached[0] is old and cached[1] is new:
            return cached[2]
        swap = HeaderSwap(
            old.request_headers(method, stream=stream), new.request_headers(method, stream=stream)
        )
        if len(self._swaps) < 1024:  # a benign race: two threads may store the same
            self._swaps[key] = (old, new, swap)
        return swap

    def chain(self, model: str | None) -> Sequence[str | None]:
        """*model*, then its fallbacks."""
        if model is None or not self.fallbacks:
            return (model,)
        return (model, *self.fallbacks.get(model, ()))

    def with_headers(self, headers: Mapping[str, str]) -> EndpointGroup:
        """A group sharing this one's book and pools, its providers' default
        headers changed (for ``Client.with_options(default_headers=...)``)."""
        clone = EndpointGroup(
            self.endpoints,
            {name: route.with_headers(headers) for name, route in self.routes.items()},
            self.book,
            routing=self.routing,
            fallbacks=self.fallbacks,
            context_fallbacks=self.context_fallbacks,
            owned=(),
        )
        clone.shared = self.shared
        return clone

    def share_cooldowns(self, backend: StateBackend) -> None:
        """Share cool-downs through *backend* when it is shared between processes."""
        if backend.shared:
            base_urls = {name: route.base_url for name, route in self.routes.items()}
            self.shared = SharedCooldowns(backend, self.book, base_urls)

    def stats(self) -> dict[str, Any]:
        """Per endpoint: state, in flight, requests, failures, cool-downs,
        latency average and last error (see :meth:`HealthBook.stats`)."""
        return self.book.stats()

    def close_idle(self) -> int:
        """Close the idle connections of the pools the group owns."""
        return sum(t.close_idle() for t in self.owned)

    def close(self) -> None:
        """Stop the active checks and close the pools the group owns."""
        if self.checks is not None:
            self.checks.stop()
        for transport in self.owned:
            transport.close()


class HealthChecks:
    """Active checks: one daemon thread (``llmpool-endpoint-checks``) that
    runs *check(name)* for every endpoint each *interval* seconds and tells
    the health book. It waits on an Event (never sleeps), and restarts in a
    forked child. Thread-safe."""

    def __init__(self, book: HealthBook, check: Callable[[str], Outcome], interval: float) -> None:
        self.book = book
        self.check = check
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        reset_after_fork(self, HealthChecks._restart, last=True)  # after the locks

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="llmpool-endpoint-checks", daemon=True
            )
            self._thread.start()

    def _restart(self) -> None:
        stopped = self._stop.is_set()
        self._stop = threading.Event()
        self._thread = None
        if not stopped:
            self.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            for name in self.book.names:
                if stop.is_set():
                    return
                try:
                    outcome = self.check(name)
                except Exception:  # a check never kills the thread
                    log.exception("active check of endpoint %s failed", name)
                    continue
                self.book.observe(name, outcome)

    def stop(self) -> None:
        """Stop the thread and wait for it (at most one check's time)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)


def _endpoint_transport(
    endpoint: Endpoint, shared: Transport, pool_config: PoolConfig | None
) -> tuple[Transport, bool]:
    """The shared pool, or an own pool capped at the endpoint's max_connections."""
    if endpoint.max_connections is None:
        return shared, False
    base = pool_config or PoolConfig()
    config = attrs.evolve(
        base,
        max_connections=endpoint.max_connections,
        max_keepalive=min(base.max_keepalive, endpoint.max_connections),
    )
    return ConnectionPool(config), True


def make_group(
    endpoints: Sequence[Any],
    *,
    shared: Transport,
    pool_config: PoolConfig | None,
    provider_options: Mapping[str, Any] | None,
    default_headers: Mapping[str, str] | None,
    routing: str | Strategy,
    health: HealthConfig | None,
    fallbacks: Any,
    context_fallbacks: Any,
    on_change: Callable[[StateChange], None],
    wrap: Callable[[Transport], Transport] = lambda t: t,
) -> EndpointGroup:
    """Build the group: a provider and a route per endpoint, the pools of
    endpoints with their own cap, the health book. On failure, closes the
    pools it opened."""
    values = check_endpoints(endpoints)
    strategy = resolve_strategy(routing)
    config = health if health is not None else HealthConfig()
    if not isinstance(config, HealthConfig):
        raise ConfigError("health must be a llmpool.HealthConfig", key="health")
    owned: list[Transport] = []
    routes: dict[str, Route] = {}
    try:
        for endpoint in values:
            provider: Provider = load_provider(
                endpoint.provider,
                api_key=endpoint.resolve_api_key(),
                default_headers=default_headers,
                **dict(provider_options or {}),
            )
            transport, own = _endpoint_transport(endpoint, shared, pool_config)
            if own:
                owned.append(transport)
            routes[endpoint.name] = make_route(
                endpoint.name, provider, endpoint.base_url, wrap(transport)
            )
    except BaseException:
        for transport in owned:
            transport.close()
        raise
    name = routing if isinstance(routing, str) else getattr(routing, "__name__", "custom")
    book = HealthBook(values, config, strategy, on_change=on_change)
    return EndpointGroup(
        values,
        routes,
        book,
        routing=name,
        fallbacks=check_fallbacks(fallbacks, "fallbacks"),
        context_fallbacks=check_fallbacks(context_fallbacks, "context_window_fallbacks"),
        owned=owned,
    )
