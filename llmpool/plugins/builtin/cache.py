"""The ``cache`` plugin: an LRU of results for deterministic requests.

A request is deterministic when it is not streamed and its payload has
``temperature`` 0 (or it is an embeddings call, with ``embeddings: true``).
The key is a sha256 of the provider, the path and the canonical JSON of the
payload; headers are not part of it. The cache is bounded in entries and in
bytes (estimated from the result's raw JSON), and cleared when the memory
manager reports the ``gc`` level or above.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext, level_name
from llmpool.plugins.builtin._settings import read_settings
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
    #: Seconds an entry stays valid (None: until evicted).
    ttl: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Cache embeddings calls too (they are deterministic without a temperature).
    embeddings: bool = attrs.field(default=True, validator=boolean)
    #: Memory pressure levels that clear the cache.
    clear_on: tuple[str, ...] = attrs.field(default=CLEAR_ON, converter=_level_names)


def cache_key(provider: str, request: Request) -> str:
    """The cache key of *request*: sha256 of provider, path and canonical JSON payload."""
    body = json.dumps(
        request.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(f"{provider}\n{request.path}\n{body}".encode()).hexdigest()


def _estimate_size(result: Any) -> int:
    raw = getattr(result, "raw", None)
    try:
        encoded = json.dumps(raw if raw else attrs.asdict(result), default=str)
    except (TypeError, ValueError, attrs.exceptions.NotAnAttrsClassError):
        encoded = repr(result)
    return len(encoded) + ENTRY_OVERHEAD


class _Entry:
    __slots__ = ("expires", "result", "size")

    def __init__(self, result: Any, size: int, expires: float | None) -> None:
        self.result = result
        self.size = size
        self.expires = expires


class CachePlugin(LLMPlugin):
    """Answers repeated deterministic requests from memory.

    Thread-safe: one lock guards the LRU and its counters; sizes and keys
    are computed outside it. Results are immutable values, shared as they are.
    """

    name = "cache"
    version = "1.0"
    priority = 10  # first: a hit skips everything else in before_request

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.settings = CacheSettings()
        # Guards _entries, _bytes and the counters.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._stores = self._evictions = 0
        self._too_large = self._expired = self._clears = 0

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(CacheSettings, self.name, context.settings)

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
        key = cache_key(ctx.provider, request)
        ctx.state[self.name] = key
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires is not None and now >= entry.expires:
                self._drop(key)
                self._expired += 1
                entry = None
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.result

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        key = ctx.state.get(self.name)
        if key is None or response is None or ctx.state.get("answered_by"):
            return
        size = _estimate_size(response) + len(key)
        ttl = self.settings.ttl
        expires = self._clock() + ttl if ttl is not None else None
        with self._lock:
            if size > self.settings.max_bytes:
                self._too_large += 1
                return
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(response, size, expires)
            self._bytes += size
            self._stores += 1
            while self._bytes > self.settings.max_bytes or (
                len(self._entries) > self.settings.max_entries
            ):
                self._drop(next(iter(self._entries)))
                self._evictions += 1

    def _drop(self, key: str) -> None:
        """Remove *key*. Called with the lock held."""
        entry = self._entries.pop(key)
        self._bytes -= entry.size

    def on_memory_pressure(self, level: object, report: object) -> None:
        if level_name(level) in self.settings.clear_on:
            self.clear()

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._clears += 1

    def teardown(self) -> None:
        self.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.settings.max_bytes,
                "hits": self._hits,
                "misses": self._misses,
                "stores": self._stores,
                "evictions": self._evictions,
                "expired": self._expired,
                "too_large": self._too_large,
                "clears": self._clears,
            }
