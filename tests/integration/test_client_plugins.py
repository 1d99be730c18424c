"""The built-in plugins and plugin isolation through a real Client and MockLLMServer."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import llmpool
from llmpool import exceptions as exc
from llmpool.testing import Fault, MockLLMServer

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-plugin-secret-42424242"


def test_logging_plugin_logs_one_line_per_call_without_the_key(
    mock_server: MockLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The logging plugin writes one line per call (reuse, retries, tokens) and never the key."""
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        with llmpool.Client(
            mock_server.base_url, api_key=KEY, plugins=["logging"], sleep=lambda s: None
        ) as c:
            c.chat("gpt-x", HI)
            mock_server.inject(Fault.status(503))
            c.chat("gpt-x", HI)
    lines = [r for r in caplog.records if r.name == "llmpool.calls"]
    assert len(lines) == 2
    second = lines[1].llmpool  # type: ignore[attr-defined]
    assert second["retries"] == 1 and second["reused"] is True
    assert second["model"] == "gpt-x"
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_cache_plugin_answers_deterministic_repeats(mock_server: MockLLMServer) -> None:
    """With temperature 0 the second identical call is answered from the cache."""
    with llmpool.Client(mock_server.base_url, plugins=["cache", "usage"]) as c:
        first = c.chat("m", HI, temperature=0)
        second = c.chat("m", HI, temperature=0)
        c.chat("m", HI, temperature=0.7)
        stats = c.stats()["plugins"]
        usage = c.plugins.get("usage").totals()  # type: ignore[union-attr]
    assert second.text == first.text
    assert mock_server.request_count == 2
    assert stats["plugins"]["cache"]["own"]["hits"] == 1
    assert usage["calls"] == 3 and usage["cached_calls"] == 1


def test_cache_is_cleared_on_memory_pressure(mock_server: MockLLMServer) -> None:
    """The client forwards memory pressure to plugins; the cache empties itself."""
    with llmpool.Client(mock_server.base_url, plugins=["cache"]) as c:
        c.chat("m", HI, temperature=0)
        cache = c.plugins.get("cache")  # type: ignore[union-attr]
        assert cache.stats()["entries"] == 1
        c._on_memory_pressure(llmpool.MemoryState.SHED, None)
        assert cache.stats()["entries"] == 0


def test_usage_plugin_counts_tokens_from_threads(mock_server: MockLLMServer) -> None:
    """The usage plugin totals tokens per model exactly under 8 threads, streams included."""
    with llmpool.Client(mock_server.base_url, plugins=["usage"]) as c:

        def work(i: int) -> int:
            if i % 2:
                with c.chat("m", HI, stream=True) as stream:
                    list(stream)
                return stream.usage.total_tokens  # type: ignore[union-attr]
            return c.chat("m", HI).usage.total_tokens

        with ThreadPoolExecutor(8) as ex:
            expected = sum(f.result() for f in [ex.submit(work, i) for i in range(80)])
        totals = c.plugins.get("usage").totals()  # type: ignore[union-attr]
    assert totals["calls"] == 80
    assert totals["total_tokens"] == expected


def test_ratelimit_plugin_raises_when_the_wait_is_too_long(mock_server: MockLLMServer) -> None:
    """Beyond requests_per_minute the ratelimit plugin raises RateLimitExceeded, unsent."""
    settings = {"ratelimit": {"requests_per_minute": 2, "timeout": 0.01}}
    with llmpool.Client(mock_server.base_url, plugins=["ratelimit"], plugin_settings=settings) as c:
        c.chat("m", HI)
        c.chat("m", HI)
        with pytest.raises(exc.RateLimitExceeded) as info:
            c.chat("m", HI)
    assert info.value.model == "m"
    assert mock_server.request_count == 2


def test_metrics_plugin_counts_requests(mock_server: MockLLMServer) -> None:
    """The metrics plugin counts requests and tokens in its private registry."""
    pytest.importorskip("prometheus_client")
    with llmpool.Client(mock_server.base_url, plugins=["metrics"]) as c:
        c.chat("m", HI)
        c.chat("m", HI)
        registry = c.plugins.get("metrics").registry  # type: ignore[union-attr]
    value = registry.get_sample_value(
        "llmpool_requests_total", {"model": "m", "operation": "chat", "outcome": "ok"}
    )
    assert value == 2.0


class Broken(llmpool.LLMPlugin):
    name = "broken"

    def after_response(self, ctx: Any, request: Any, response: Any) -> None:
        raise RuntimeError("observer bug")


class Strict(llmpool.LLMPlugin):
    name = "strict"
    critical = True

    def before_request(self, ctx: Any, request: Any) -> None:
        raise RuntimeError("policy says no")


class Counter(llmpool.LLMPlugin):
    name = "counter"

    def __init__(self) -> None:
        self.attempts = 0
        self.retries = 0
        self.chunks = 0
        self.ends = 0

    def on_attempt(self, ctx: Any, attempt: int) -> None:
        self.attempts += 1

    def on_retry(self, ctx: Any, attempt: int, error: Exception, delay: float) -> None:
        self.retries += 1

    def on_stream_chunk(self, ctx: Any, chunk: Any) -> None:
        self.chunks += 1

    def on_stream_end(self, ctx: Any, stream: Any) -> None:
        self.ends += 1


def test_a_failing_observer_never_fails_the_call(mock_server: MockLLMServer) -> None:
    """A non-critical plugin's exception is counted; the call returns its result."""
    with llmpool.Client(mock_server.base_url, plugins=[Broken()]) as c:
        assert c.chat("m", HI).text
        stats = c.stats()["plugins"]["plugins"]["broken"]
    assert stats["failures"] == 1


def test_a_failing_critical_plugin_fails_the_call(mock_server: MockLLMServer) -> None:
    """A critical plugin's exception becomes PluginError for that call, nothing is sent."""
    with llmpool.Client(mock_server.base_url, plugins=[Strict()]) as c:
        with pytest.raises(exc.PluginError) as info:
            c.chat("m", HI)
    assert info.value.plugin == "strict"
    assert mock_server.request_count == 0


def test_hooks_run_once_per_attempt_and_per_chunk(mock_server: MockLLMServer) -> None:
    """on_attempt/on_retry run inside the retry loop; stream hooks per chunk and at the end."""
    counter = Counter()
    with llmpool.Client(mock_server.base_url, plugins=[counter], sleep=lambda s: None) as c:
        mock_server.inject(Fault.status(500))
        c.chat("m", HI)
        with c.chat("m", HI, stream=True) as stream:
            chunks = list(stream)
    assert counter.attempts == 3 and counter.retries == 1
    assert counter.chunks == len(chunks) and counter.ends == 1


def test_env_variable_overrides_configured_plugins(
    mock_server: MockLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMPOOL_PLUGINS replaces the configured names ("" loads none)."""
    monkeypatch.setenv("LLMPOOL_PLUGINS", "usage")
    with llmpool.Client(mock_server.base_url, plugins=["logging"]) as c:
        assert [p.name for p in c.plugins.plugins] == ["usage"]  # type: ignore[union-attr]
    monkeypatch.setenv("LLMPOOL_PLUGINS", "")
    with llmpool.Client(mock_server.base_url, plugins=["logging"]) as c:
        assert c.plugins is None


def test_a_plugin_that_cannot_load_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client(plugins=[good, object()]) raises, tears the good plugin down and closes its pool."""
    from llmpool.exceptions import PluginLoadError

    torn: list[str] = []
    closed: list[object] = []

    class Good(llmpool.LLMPlugin):
        name = "good"

        def teardown(self) -> None:
            torn.append(self.name)

    original = llmpool.ConnectionPool.close

    def recording_close(self: llmpool.ConnectionPool) -> None:
        closed.append(self)
        original(self)

    monkeypatch.setattr(llmpool.ConnectionPool, "close", recording_close)
    with pytest.raises(PluginLoadError):
        llmpool.Client("http://127.0.0.1:9/v1", plugins=[Good(), object()])
    assert torn == ["good"] and len(closed) == 1
