"""The ``cache`` plugin: answers repeated deterministic requests.

A request is deterministic when it is not streamed and its payload has
``temperature`` 0 (or it is an embeddings call, with ``embeddings: true``).
The key is a sha256 of the provider, the credential scope (the base URL and
the credential headers, hashed: two API keys never share entries), the path
and the canonical JSON of the payload (model and parameters); no secret and
no prompt text can be read from it.

Where entries live follows the client's state backend: with a shared one
(Redis) every process reads what any process stored, as JSON (never
pickle), with a TTL and a per-entry size cap; otherwise an in-process LRU
bounded in entries and bytes, cleared when the memory manager reports the
``gc`` level or above. A failing shared backend is a miss (and a store that
fails is dropped): the cache never fails a call nor loses its answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError, StateBackendError
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext, level_name
from llmpool.plugins.builtin import cache_codec
from llmpool.plugins.builtin._settings import read_settings
from llmpool.state import (
    CredentialScopes,
    MemoryBackend,
    StateBackend,
    cache_digest,
    credential_scope,
)
from llmpool.validators import boolean, optional, positive_int, positive_number

__all__ = ["CachePlugin", "CacheSettings", "cache_key"]

#: Bytes counted for an entry on top of its raw JSON (key, objects, bookkeeping).
ENTRY_OVERHEAD = 512

#: Memory levels (the memory manager's state names) that clear the cache by default.
CLEAR_ON = ("gc", "shed", "critical")


def _level_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"clear_on must be a list of memory level names, got {value!r}",
            key="clear_on",
            value=value,
        )
    return tuple(v.lower() for v in value)


@attrs.frozen(kw_only=True)
class CacheSettings:
    """The ``cache`` plugin's settings. Immutable."""

    #: Upper bound of the estimated size of all entries.
    max_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=positive_int)
    #: Upper bound of the number of entries.
    max_entries: int = attrs.field(default=1024, validator=positive_int)
    #: Seconds an entry stays valid (None: until evicted; one hour in a shared cache).
    ttl: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: The largest entry a shared cache stores (its encoded bytes).
    max_entry_bytes: int = attrs.field(default=1024 * 1024, validator=positive_int)
    #: Cache embeddings calls too (they are deterministic without a temperature).
    embeddings: bool = attrs.field(default=True, validator=boolean)
    #: Memory pressure levels that clear the cache.
    clear_on: tuple[str, ...] = attrs.field(default=CLEAR_ON, converter=_level_names)


def cache_key(
    provider: str,
    request: Request,
    base_url: str | None = None,
    scopes: Callable[[Mapping[str, str], str | None], str] = credential_scope,
) -> str:
    """The cache key of *request* (a hex digest): provider, credential scope
    (*base_url* and the credential headers, digested by *scopes*), path and
    canonical JSON payload."""
    scope = scopes(request.headers, base_url)
    return cache_digest(provider, scope, request.path, request.payload)


def _estimate_size(result: Any) -> int:
    raw = getattr(result, "raw", None)
    try:
        encoded = json.dumps(raw if raw else attrs.asdict(result), default=str)
    except (TypeError, ValueError, attrs.exceptions.NotAnAttrsClassError):
        encoded = repr(result)
    return len(encoded) + ENTRY_OVERHEAD


class CachePlugin(LLMPlugin):
    """Answers repeated deterministic requests from the cache.

    Thread-safe: the store (an in-process LRU or the shared backend) guards
    itself; one lock guards the counters; keys, sizes and encodings are
    computed outside it. Results are immutable values, shared as they are.
    """

    name = "cache"
    version = "1.1"
    priority = 10  # first: a hit skips everything else in before_request

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.settings = CacheSettings()
        # Guards the counters.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._store: StateBackend = self._local()
        # credential scopes, computed once per base URL and credentials
        self._scopes = CredentialScopes()
        self._hits = self._misses = self._stores = 0
        self._too_large = self._backend_errors = self._undecodable = 0

    def _local(self) -> MemoryBackend:
        return MemoryBackend(
            max_cache_entries=self.settings.max_entries,
            max_cache_bytes=self.settings.max_bytes,
            clock=self._clock,
        )

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(CacheSettings, self.name, context.settings)
        state = context.state
        self._store = state if state is not None and state.shared else self._local()

    @property
    def shared(self) -> bool:
        """Whether entries live in a shared backend (Redis)."""
        return self._store.shared

    def _cacheable(self, ctx: CallContext, request: Request) -> bool:
        payload = request.payload
        if request.stream or payload is None or payload.get("stream"):
            return False
        if ctx.operation == "embed":
            return self.settings.embeddings
        temperature = payload.get("temperature")
        return isinstance(temperature, (int, float)) and temperature == 0

    def before_request(self, ctx: CallContext, request: Request) -> Any:
        if not self._cacheable(ctx, request):
            return None
        key = cache_key(ctx.provider, request, ctx.base_url, self._scopes)
        ctx.state[self.name] = key
        try:
            found = self._store.cache_get(key, timeout=_time_left(ctx))
        except StateBackendError:
            found = None
            self._count("_backend_errors")
        if found is not None and self._store.shared:
            found = cache_codec.decode(found)
            if found is None:
                self._count("_undecodable")
        self._count("_misses" if found is None else "_hits")
        return found

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        key = ctx.state.get(self.name)
        if key is None or response is None or ctx.state.get("answered_by"):
            return
        value: Any = response
        if self._store.shared:
            value = cache_codec.encode(response)
            if value is None:
                return
            size = len(value)
            if size > self.settings.max_entry_bytes:
                self._count("_too_large")
                return
        else:
            size = _estimate_size(response) + len(key)
        try:
            stored = self._store.cache_set(
                key, value, size=size, ttl=self.settings.ttl, timeout=_time_left(ctx)
            )
        except StateBackendError:
            self._count("_backend_errors")  # the answer still goes to the caller
            return
        if stored:  # the in-process store counts what it refused as too large
            self._count("_stores")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def on_memory_pressure(self, level: object, report: object) -> None:
        if level_name(level) in self.settings.clear_on:
            self.clear()

    def clear(self) -> None:
        """Drop every entry of this process (a shared cache is left alone)."""
        self._store.cache_clear()

    def teardown(self) -> None:
        self.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            own = {
                "hits": self._hits,
                "misses": self._misses,
                "stores": self._stores,
                "too_large": self._too_large,
                "backend_errors": self._backend_errors,
                "undecodable": self._undecodable,
            }
        store = dict(self._store.cache_stats())
        store["too_large"] = store.get("too_large", 0) + own.pop("too_large")
        return {"backend": self._store.name, **own, **store}


def _time_left(ctx: CallContext) -> float | None:
    """Seconds left of the call's deadline (None: no deadline)."""
    deadline = getattr(ctx, "deadline", None)
    return None if deadline is None else max(0.0, deadline - time.monotonic())
