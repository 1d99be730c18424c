"""Client with a memory manager: accounting per call, pressure sheds idle connections."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import llmpool
from llmpool import exceptions as exc
from llmpool.memory import MemoryLimit
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]
MIB = 1 << 20


class Feed:
    """A sampler returning the RSS a test sets."""

    def __init__(self, rss: int) -> None:
        self.rss = rss

    def __call__(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss)


def _manager(feed: Feed, **config: object) -> llmpool.MemoryManager:
    cfg = llmpool.MemoryConfig(max_memory_mb=100, consecutive_samples=1, **config)  # type: ignore[arg-type]
    return llmpool.MemoryManager(
        cfg, sampler=feed, limit=MemoryLimit(bytes=100 * MIB, source="config")
    )


def test_calls_are_accounted_per_operation_and_model(mock_server: MockLLMServer) -> None:
    """Bytes in and out of every call, streamed or not, land under operation and model."""
    with llmpool.Client(mock_server.base_url, memory=llmpool.MemoryConfig()) as c:
        c.chat("gpt-x", HI)
        with c.chat("gpt-x", HI, stream=True) as stream:
            list(stream)
        c.embed("emb", ["a"])
        report = c.stats()["memory"]
        operations = c.memory.report().to_dict()["operations"]  # type: ignore[union-attr]
    assert report["state"] == "normal"
    keys = " ".join(map(str, operations))
    assert "chat" in keys and "gpt-x" in keys and "embed" in keys


def test_pressure_closes_idle_connections_and_tells_plugins(mock_server: MockLLMServer) -> None:
    """Entering the shed state closes the pool's idle connections (counted) and calls plugins."""
    seen: list[str] = []

    class Watcher(llmpool.LLMPlugin):
        name = "watcher"

        def on_memory_pressure(self, level: object, report: object) -> None:
            seen.append(str(getattr(level, "value", level)))

    feed = Feed(10 * MIB)
    memory = _manager(feed)
    with llmpool.Client(mock_server.base_url, memory=memory, plugins=[Watcher()]) as c:
        for _ in range(3):
            c.chat("m", HI)
        assert c.stats()["pool"]["idle"] == 1
        feed.rss = 93 * MIB  # above shed (90%)
        memory.tick()
        stats = c.stats()["pool"]
        assert c.chat("m", HI).text  # a new connection serves the next call
    memory.close()
    assert stats["idle"] == 0
    assert stats["idle_closed"] == 1
    assert seen == ["shed"]


def test_reject_on_pressure_fails_fast(mock_server: MockLLMServer) -> None:
    """With reject_on_pressure, calls under shed pressure raise MemoryPressureError, unsent."""
    feed = Feed(97 * MIB)
    memory = _manager(feed, reject_on_pressure=True)
    with llmpool.Client(mock_server.base_url, memory=memory) as c:
        memory.tick()
        with pytest.raises(exc.MemoryPressureError):
            c.chat("m", HI)
        feed.rss = 10 * MIB
        memory.tick()
        assert c.chat("m", HI).text
    memory.close()
    assert mock_server.request_count == 1
