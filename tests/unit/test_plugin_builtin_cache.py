"""The built-in cache plugin: deterministic requests only, LRU, bounded in bytes and entries."""

from __future__ import annotations

import enum
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmpool.models import CallContext, ChatCompletion, Embeddings, Request
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.cache import ENTRY_OVERHEAD, CachePlugin, cache_key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def load(settings: dict[str, Any] | None = None, clock: Clock | None = None) -> PluginManager:
    manager = PluginManager(strict=True)
    plugin = CachePlugin(clock=clock) if clock else CachePlugin
    manager.register_plugin(plugin, settings)
    return manager


def cache_of(manager: PluginManager) -> CachePlugin:
    plugin = manager.get("cache")
    assert isinstance(plugin, CachePlugin)
    return plugin


def chat(prompt: str = "hi", temperature: Any = 0, **extra: Any) -> Request:
    payload = {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}
    if temperature is not None:
        payload["temperature"] = temperature
    return Request(method="POST", path="/chat/completions", payload=payload)


def result(name: str = "r", size: int = 10) -> ChatCompletion:
    return ChatCompletion(id=name, model="m", choices=(), raw={"pad": "x" * size})


def entries(manager: PluginManager) -> int:
    return int(cache_of(manager).stats()["entries"])


def call(manager: PluginManager, request: Request, answer: Any, op: str = "chat") -> Any:
    """Run a call through the cache: the cached answer, or *answer* after storing it."""
    ctx = CallContext(operation=op, model="m")
    out = manager.before_request(ctx, request)
    if not isinstance(out, Request):
        return out
    return manager.after_response(ctx, out, answer)


def test_repeated_deterministic_request_is_answered_from_the_cache() -> None:
    """temperature 0: the second call gets the first call's result without the network."""
    manager = load()
    first = result("first")
    assert call(manager, chat(), first) is first
    ctx = CallContext(operation="chat", model="m")
    assert manager.before_request(ctx, chat()) is first
    assert ctx.state["answered_by"] == "cache"
    stats = cache_of(manager).stats()
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["stores"] == 1


@pytest.mark.parametrize(
    "request_",
    [chat(temperature=None), chat(temperature=0.7), chat(stream=True)],
    ids=["no-temperature", "warm", "stream-payload"],
)
def test_non_deterministic_requests_are_not_cached(request_: Request) -> None:
    """Without temperature 0, or streamed, a request is neither looked up nor stored."""
    manager = load()
    call(manager, request_, result())
    assert call(manager, request_, result("second")).id == "second"
    assert entries(manager) == 0


def test_streamed_request_is_not_cached() -> None:
    """Request.stream=True bypasses the cache."""
    manager = load()
    streamed = chat().replace(stream=True)
    call(manager, streamed, result())
    assert entries(manager) == 0


def test_credentials_body_and_path_are_part_of_the_key_other_headers_not() -> None:
    """Two API keys never share an entry; other headers (an Idempotency-Key) do;
    a different body or path does not."""
    manager = load()
    stored = result("stored")
    key_a = {"Authorization": "Bearer a", "Idempotency-Key": "1", "X-Team": "red"}
    call(manager, chat().replace(headers=key_a), stored)
    same_key = {"Authorization": "Bearer a", "Idempotency-Key": "2", "X-Team": "blue"}
    assert call(manager, chat().replace(headers=same_key), None) is stored
    other_key = chat().replace(headers={"Authorization": "Bearer b"})
    assert call(manager, other_key, result("b")).id == "b"
    assert call(manager, chat().replace(headers={"x-api-key": "a"}), result("x")).id == "x"
    assert call(manager, chat("other"), result("other")).id == "other"
    assert call(manager, chat().replace(path="/v2/chat"), result("path")).id == "path"


def test_the_key_holds_no_secret_and_no_prompt_text() -> None:
    """The key is a digest: neither the API key nor the prompt can be read in it."""
    request = chat("my secret prompt").replace(headers={"Authorization": "Bearer sk-live-123"})
    key = cache_key("openai", request, "http://h/v1")
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key("openai", request, "http://other/v1") != key


def test_key_ignores_payload_key_order() -> None:
    """The key is built from canonical JSON: key order does not matter."""
    manager = load()
    stored = result()
    a = Request(method="POST", path="/c", payload={"temperature": 0, "model": "m"})
    b = Request(method="POST", path="/c", payload={"model": "m", "temperature": 0})
    call(manager, a, stored)
    assert call(manager, b, None) is stored


def test_lru_order_decides_eviction() -> None:
    """The least recently used entry is evicted first; a hit refreshes an entry."""
    manager = load({"max_entries": 2})
    a, b = result("a"), result("b")
    call(manager, chat("a"), a)
    call(manager, chat("b"), b)
    assert call(manager, chat("a"), None) is a  # a is now the most recent
    call(manager, chat("c"), result("c"))  # evicts b
    assert call(manager, chat("a"), None) is a
    assert call(manager, chat("b"), result("b2")).id == "b2"
    assert cache_of(manager).stats()["evictions"] == 2


def test_byte_bound_is_never_exceeded() -> None:
    """The estimated bytes stay under max_bytes; old entries are evicted to make room."""
    entry = len(json.dumps({"pad": "x" * 1000})) + ENTRY_OVERHEAD + 64
    manager = load({"max_bytes": entry * 3})
    plugin = cache_of(manager)
    for i in range(10):
        call(manager, chat(str(i)), result(str(i), size=1000))
        assert plugin.stats()["bytes"] <= entry * 3
    assert plugin.stats()["entries"] == 3
    assert plugin.stats()["evictions"] == 7
    assert call(manager, chat("9"), None).id == "9"


def test_entry_larger_than_the_bound_is_not_stored() -> None:
    """A single result bigger than max_bytes is counted and not stored."""
    manager = load({"max_bytes": 1000})
    call(manager, chat(), result(size=5000))
    stats = cache_of(manager).stats()
    assert stats["too_large"] == 1 and stats["entries"] == 0


def test_ttl_expires_entries() -> None:
    """With ttl, an entry older than ttl is a miss."""
    clock = Clock()
    manager = load({"ttl": 10}, clock)
    call(manager, chat(), result("old"))
    clock.now = 9.9
    assert call(manager, chat(), None).id == "old"
    clock.now = 10.0
    assert call(manager, chat(), result("new")).id == "new"
    assert cache_of(manager).stats()["expired"] == 1


class State(enum.Enum):
    """Stands in for the memory manager's states (plugins never import llmpool.memory)."""

    NORMAL = "normal"
    WARN = "warn"
    GC = "gc"
    CRITICAL = "critical"


def test_memory_pressure_clears_from_the_gc_level_up() -> None:
    """normal and warn keep the cache; gc and above clear it."""
    manager = load()
    call(manager, chat(), result())
    manager.on_memory_pressure(State.NORMAL, None)
    manager.on_memory_pressure(State.WARN, None)
    assert entries(manager) == 1
    manager.on_memory_pressure(State.GC, None)
    assert entries(manager) == 0 and cache_of(manager).stats()["bytes"] == 0
    call(manager, chat(), result())
    manager.on_memory_pressure("critical", None)
    assert entries(manager) == 0


def test_clear_on_setting_chooses_the_levels() -> None:
    """clear_on lists the levels that clear the cache."""
    manager = load({"clear_on": ["warn"]})
    call(manager, chat(), result())
    manager.on_memory_pressure(State.WARN, None)
    assert entries(manager) == 0
    assert PluginManager().register_plugin(CachePlugin, {"clear_on": "warn"}) is None


def test_embeddings_are_cached_unless_disabled() -> None:
    """Embeddings calls are deterministic and cached, unless embeddings: false."""
    request = Request(method="POST", path="/embeddings", payload={"model": "e", "input": ["a"]})
    vectors = Embeddings(vectors=((0.1, 0.2),), model="e")
    manager = load()
    call(manager, request, vectors, op="embed")
    assert call(manager, request, None, op="embed") is vectors
    disabled = load({"embeddings": False})
    call(disabled, request, vectors, op="embed")
    assert entries(disabled) == 0


def test_concurrent_use_keeps_counters_consistent() -> None:
    """Threads hitting and filling the cache together keep exact counters and bounds."""
    manager = load({"max_entries": 16})

    def work(worker: int) -> int:
        for i in range(200):
            call(manager, chat(str((worker * 7 + i) % 40)), result(str(i)))
        return 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(f.result() for f in [pool.submit(work, w) for w in range(8)]) == 1600
    stats = cache_of(manager).stats()
    assert stats["hits"] + stats["misses"] == 1600
    assert stats["stores"] == stats["misses"]
    assert stats["entries"] == 16 == entries(manager)
