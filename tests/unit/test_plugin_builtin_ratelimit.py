"""The built-in ratelimit plugin: token buckets per model, with an injected clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmpool.exceptions import RateLimitExceeded
from llmpool.models import CallContext, ChatCompletion, Request, Usage
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.ratelimit import RateLimitPlugin, TokenBucket


class FakeTime:
    """A clock whose sleep() advances it and records the waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


def load(settings: dict[str, Any], fake: FakeTime) -> tuple[PluginManager, RateLimitPlugin]:
    manager = PluginManager(strict=True)
    plugin = manager.register_plugin(RateLimitPlugin(clock=fake.clock, sleep=fake.sleep), settings)
    assert isinstance(plugin, RateLimitPlugin)
    return manager, plugin


def start(manager: PluginManager, model: str = "m") -> CallContext:
    ctx = CallContext(operation="chat", model=model)
    manager.before_request(ctx, Request(method="POST", path="/chat/completions", payload={}))
    return ctx


def finish(manager: PluginManager, ctx: CallContext, tokens: int) -> None:
    usage = Usage(total_tokens=tokens)
    result = ChatCompletion(id="x", model=ctx.model or "", choices=(), usage=usage)
    manager.after_response(ctx, Request(method="POST", path="/x", payload={}), result)


def test_burst_up_to_the_rate_then_waits() -> None:
    """60 requests/min pass at once; the 61st waits one second (1/rate) and passes."""
    fake = FakeTime()
    manager, _ = load({"requests_per_minute": 60}, fake)
    for _ in range(60):
        start(manager)
    assert fake.sleeps == []
    start(manager)
    assert fake.sleeps == [pytest.approx(1.0)]


def test_waiting_longer_than_timeout_raises_rate_limit_exceeded() -> None:
    """When capacity is further away than timeout, the call fails at once with the model."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 60, "timeout": 0.5}, fake)
    for _ in range(60):
        start(manager)
    with pytest.raises(RateLimitExceeded) as info:
        start(manager)
    assert info.value.model == "m" and info.value.waited == 0.0
    assert fake.sleeps == []
    assert plugin.stats()["rejected"] == 1


def test_models_have_separate_buckets() -> None:
    """Draining one model's bucket does not slow another model."""
    fake = FakeTime()
    manager, _ = load({"requests_per_minute": 2, "timeout": 0}, fake)
    start(manager, "a")
    start(manager, "a")
    with pytest.raises(RateLimitExceeded):
        start(manager, "a")
    start(manager, "b")


def test_tokens_are_charged_from_usage_and_make_later_calls_wait() -> None:
    """Tokens spent put the bucket in debt; the next call waits until it is repaid."""
    fake = FakeTime()
    manager, plugin = load({"tokens_per_minute": 600, "timeout": 60}, fake)  # 10 tokens/s
    ctx = start(manager)
    finish(manager, ctx, 650)  # level 600 - 650 = -50
    assert plugin.levels("m")["tokens"] == pytest.approx(-50)
    start(manager)
    assert fake.sleeps == [pytest.approx(5.1)]  # until the level is back at 1 token
    assert plugin.stats()["waits"] == 1


def test_stream_usage_is_charged_and_cached_answers_are_not() -> None:
    """on_stream_end charges the stream's usage; a cache answer charges nothing."""
    fake = FakeTime()
    manager, plugin = load({"tokens_per_minute": 1000}, fake)

    class Stream:
        usage = Usage(total_tokens=100)

    manager.on_stream_end(CallContext(operation="chat", model="m"), Stream())
    cached = CallContext(operation="chat", model="m")
    cached.state["answered_by"] = "cache"
    finish(manager, cached, 500)
    assert plugin.levels("m")["tokens"] == pytest.approx(900)


def test_bucket_count_is_bounded() -> None:
    """Only max_models models keep buckets; the least recently used are dropped."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 10, "max_models": 3}, fake)
    for model in ("a", "b", "c", "d", "e"):
        start(manager, model)
    assert plugin.stats()["models"] == 3


def test_waiting_happens_outside_the_lock() -> None:
    """While one call sleeps for capacity, a call for another model goes through."""
    fake = FakeTime()
    sleeping, release = threading.Event(), threading.Event()

    def blocking_sleep(seconds: float) -> None:
        sleeping.set()
        assert release.wait(10)
        fake.sleep(seconds)

    manager = PluginManager(strict=True)
    manager.register_plugin(
        RateLimitPlugin(clock=fake.clock, sleep=blocking_sleep),
        {"requests_per_minute": 1, "timeout": 120},
    )
    start(manager, "a")
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(start, manager, "a")
        assert sleeping.wait(10)
        start(manager, "b")  # would deadlock if the lock were held while sleeping
        release.set()
        waiting.result(timeout=10)
    assert fake.sleeps == [pytest.approx(60.0)]


def test_concurrent_calls_take_exactly_the_capacity() -> None:
    """Eight threads share the bucket: 80 calls at 80/min pass without any wait."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 80, "timeout": 0}, fake)

    def work() -> int:
        for _ in range(10):
            start(manager)
        return 10

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(f.result() for f in [pool.submit(work) for _ in range(8)]) == 80
    assert plugin.levels("m")["requests"] == pytest.approx(0.0)
    with pytest.raises(RateLimitExceeded):
        start(manager)


def test_settings_are_validated() -> None:
    """At least one rate is required; rates must be positive."""
    manager = PluginManager()
    assert manager.register_plugin(RateLimitPlugin) is None
    assert manager.register_plugin(RateLimitPlugin, {"requests_per_minute": -1}) is None
    reasons = [f.reason for f in manager.load_failures]
    assert "requests_per_minute" in reasons[0] and "requests_per_minute" in reasons[1]


def test_token_bucket_refills_continuously_up_to_capacity() -> None:
    """A bucket refills at rate/60 per second and never above one minute's worth."""
    bucket = TokenBucket(120, now=0.0)
    bucket.level = 0.0
    bucket.refill(10.0)
    assert bucket.level == pytest.approx(20.0)
    bucket.refill(1000.0)
    assert bucket.level == 120
    assert bucket.wait_for(121) == pytest.approx(0.5)
