"""The built-in ratelimit plugin: sliding windows per (scope, model), with an injected clock."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmpool.exceptions import RateLimitExceeded, StateBackendError
from llmpool.models import CallContext, ChatCompletion, Request, Usage
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.ratelimit import RateLimitPlugin, reserve
from llmpool.state import Admission, MemoryBackend, RateLimits

JITTER = 0.011  # the plugin adds at most 10 ms to a wait


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


def load(
    settings: dict[str, Any], fake: FakeTime, **manager_options: Any
) -> tuple[PluginManager, RateLimitPlugin]:
    manager = PluginManager(strict=True, **manager_options)
    plugin = manager.register_plugin(RateLimitPlugin(clock=fake.clock, sleep=fake.sleep), settings)
    assert isinstance(plugin, RateLimitPlugin)
    return manager, plugin


def chat_request(max_tokens: int | None = None) -> Request:
    payload: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    return Request(method="POST", path="/chat/completions", payload=payload)


def start(manager: PluginManager, model: str = "m", max_tokens: int | None = None) -> CallContext:
    ctx = CallContext(operation="chat", model=model)
    manager.before_request(ctx, chat_request(max_tokens))
    return ctx


def finish(manager: PluginManager, ctx: CallContext, tokens: int) -> None:
    usage = Usage(total_tokens=tokens)
    result = ChatCompletion(id="x", model=ctx.model or "", choices=(), usage=usage)
    manager.after_response(ctx, Request(method="POST", path="/x", payload={}), result)


def test_the_window_admits_its_budget_then_waits_for_the_oldest_call_to_leave() -> None:
    """60 requests/min pass at once; the 61st waits until the first leaves the window."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 60, "timeout": 60}, fake)
    for _ in range(60):
        start(manager)
    assert fake.sleeps == []
    fake.now = 20.0
    start(manager)
    assert fake.sleeps == [pytest.approx(40.0, abs=JITTER)]
    assert plugin.stats()["waits"] == 1 and plugin.stats()["admitted"] == 61


def test_waiting_longer_than_timeout_raises_rate_limit_exceeded() -> None:
    """When room is further away than timeout, the call fails at once with the model."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 60, "timeout": 0.5}, fake)
    for _ in range(60):
        start(manager)
    with pytest.raises(RateLimitExceeded) as info:
        start(manager)
    assert info.value.model == "m" and info.value.waited == 0.0
    assert fake.sleeps == []
    assert plugin.stats()["rejected"] == 1


def test_the_call_deadline_bounds_the_wait() -> None:
    """A call whose deadline ends before room appears fails at once, whatever timeout says."""
    fake = FakeTime()
    manager, _ = load({"requests_per_minute": 1, "timeout": 120}, fake)
    start(manager)
    ctx = CallContext(operation="chat", model="m")
    ctx.deadline = time.monotonic() + 5.0
    with pytest.raises(RateLimitExceeded):
        manager.before_request(ctx, chat_request())
    assert fake.sleeps == []


def test_models_have_separate_windows() -> None:
    """Filling one model's window does not slow another model."""
    fake = FakeTime()
    manager, _ = load({"requests_per_minute": 2, "timeout": 0}, fake)
    start(manager, "a")
    start(manager, "a")
    with pytest.raises(RateLimitExceeded):
        start(manager, "a")
    start(manager, "b")


def test_each_api_key_and_base_url_spends_its_own_budget() -> None:
    """The scope digests of credentials are kept per (base URL, model, headers): the same key
    spends one budget call after call, another key or base URL another budget."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 1, "timeout": 0}, fake)

    def call(key: str, base_url: str = "http://a/v1") -> None:
        ctx = CallContext(operation="chat", model="m", base_url=base_url)
        request = Request(method="POST", path="/chat/completions", payload={})
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"k{ctx.call_id}"}
        manager.before_request(ctx, request.replace(headers=headers))

    call("sk-one")
    with pytest.raises(RateLimitExceeded):
        call("sk-one")
    call("sk-two")
    call("sk-one", "http://b/v1")
    scopes = plugin._scopes._scopes  # one per credentials, whatever the Idempotency-Key
    assert len(scopes) == 3 and not any("sk-" in s for s in scopes.values())


def test_a_window_scales_the_per_minute_budget() -> None:
    """window 2 s with 1800/min: 60 calls per 2 s."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 1800, "window": 2.0, "timeout": 0}, fake)
    for _ in range(60):
        start(manager)
    with pytest.raises(RateLimitExceeded):
        start(manager)
    fake.now = 2.0
    start(manager)
    assert plugin.usage("m")["requests"] == 1


def test_tokens_are_reserved_from_max_tokens_and_reconciled_with_usage() -> None:
    """A call reserves max_tokens (+ its prompt estimate); its usage replaces the reservation."""
    fake = FakeTime()
    manager, plugin = load({"tokens_per_minute": 1000, "timeout": 0}, fake)
    first = start(manager, max_tokens=600)
    body = len(chat_request(600).body or b"") // 4
    assert plugin.usage("m")["tokens"] == 600 + body
    with pytest.raises(RateLimitExceeded):
        start(manager, max_tokens=600)  # 1200 > 1000 while the first is in flight
    finish(manager, first, 100)
    assert plugin.usage("m")["tokens"] == 100
    start(manager, max_tokens=600)  # room again: the first used 100


def test_usage_above_the_reservation_is_debt_that_later_calls_wait_for() -> None:
    """A call that used more than it reserved fills the window; the next waits until it leaves."""
    fake = FakeTime()
    manager, _ = load({"tokens_per_minute": 600, "timeout": 120}, fake)
    ctx = start(manager, max_tokens=10)
    finish(manager, ctx, 650)
    fake.now = 15.0
    start(manager, max_tokens=10)
    assert fake.sleeps == [pytest.approx(45.0, abs=JITTER)]


def test_stream_usage_is_reconciled_and_cached_answers_are_not() -> None:
    """on_stream_end reconciles the stream's usage; a call without a reservation changes nothing."""
    fake = FakeTime()
    manager, plugin = load({"tokens_per_minute": 1000}, fake)

    class Stream:
        usage = Usage(total_tokens=100)

    ctx = start(manager, max_tokens=300)
    manager.on_stream_end(ctx, Stream())
    assert plugin.usage("m")["tokens"] == 100
    cached = CallContext(operation="chat", model="m")
    cached.state["answered_by"] = "cache"
    finish(manager, cached, 500)
    assert plugin.usage("m")["tokens"] == 100


def test_reserve_reads_max_tokens_or_the_default() -> None:
    """max_tokens, else max_completion_tokens, else default_max_tokens, plus body/4."""
    body = Request(method="POST", path="/x", payload={"max_completion_tokens": 7})
    assert reserve(body, 50) == 7 + len(body.body or b"") // 4
    assert reserve(Request(method="POST", path="/x", payload={}), 50) == 50 + 0


def test_window_count_is_bounded() -> None:
    """Only max_models windows are kept; the least recently used are dropped."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 10, "max_models": 3}, fake)
    for model in ("a", "b", "c", "d", "e"):
        start(manager, model)
    backend = plugin._backend
    assert isinstance(backend, MemoryBackend) and backend.stats()["scopes"] == 3


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
    assert fake.sleeps == [pytest.approx(60.0, abs=JITTER)]


def test_concurrent_calls_take_exactly_the_capacity() -> None:
    """Eight threads share the window: 80 calls at 80/min pass without any wait, not one more."""
    fake = FakeTime()
    manager, plugin = load({"requests_per_minute": 80, "timeout": 0}, fake)

    def work() -> int:
        for _ in range(10):
            start(manager)
        return 10

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(f.result() for f in [pool.submit(work) for _ in range(8)]) == 80
    assert plugin.usage("m")["requests"] == 80
    with pytest.raises(RateLimitExceeded):
        start(manager)


def test_settings_are_validated() -> None:
    """At least one rate is required; rates must be positive."""
    manager = PluginManager()
    assert manager.register_plugin(RateLimitPlugin) is None
    assert manager.register_plugin(RateLimitPlugin, {"requests_per_minute": -1}) is None
    reasons = [f.reason for f in manager.load_failures]
    assert "requests_per_minute" in reasons[0] and "requests_per_minute" in reasons[1]


class BrokenBackend(MemoryBackend):
    """A shared backend whose every admission fails as an unreachable Redis does."""

    name = "broken"
    shared = True

    def admit(
        self, scope: str, limits: RateLimits, *, tokens: int = 0, timeout: float | None = None
    ) -> Admission:
        raise StateBackendError("down", backend="broken", operation="admit", reason="Refused")


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_a_failing_backend_follows_the_policy(policy: str) -> None:
    """allow: the call goes, counted; deny: it fails with StateBackendError, counted."""
    fake = FakeTime()
    backend = BrokenBackend(on_backend_error=policy)
    manager, plugin = load({"requests_per_minute": 1}, fake, state=backend)
    if policy == "allow":
        start(manager)
        start(manager)
        assert plugin.stats()["allowed_on_error"] == 2
    else:
        with pytest.raises(StateBackendError) as info:
            start(manager)
        assert info.value.operation == "admit" and plugin.stats()["denied"] == 1
    assert plugin.stats()["backend"] == "broken" and fake.sleeps == []
