"""Shared state per call: the Redis rate limiter over no limiter (one round trip on
loopback), and a cache hit through Redis against a real call to a 20 ms server and
against the in-process cache. Run side by side:

    tox -e bench -- tests/benchmarks/test_state_bench.py
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CannedServer, load_module

import llmpool
from llmpool.testing import MockLLMServer

redis_url = load_module(
    "redis_support", Path(__file__).parents[1] / "integration" / "redis_support.py"
).redis_url

MESSAGES = [{"role": "user", "content": "hi"}]
HUGE = {"ratelimit": {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000}}
REQUESTS_ONLY = {"ratelimit": {"requests_per_minute": 10_000_000}}


@pytest.fixture
def state() -> Iterator[llmpool.StateConfig]:
    url = redis_url()
    config = llmpool.StateConfig(url=url, key_prefix=f"llmpool-bench-{uuid.uuid4().hex[:8]}")
    yield config
    import redis

    client = redis.Redis.from_url(url)
    for pattern in (f"{config.key_prefix}:*", f"{{{config.key_prefix}:*"):
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)


def _bench(benchmark: Any, call: Callable[[], object]) -> None:
    call()  # warm: connections open, scripts loaded
    benchmark(call)


@pytest.mark.benchmark(group="state: rate limiter per call (canned server)")
@pytest.mark.parametrize("limiter", ["none", "memory", "redis", "redis-requests-only"])
def test_rate_limiter_per_call(
    benchmark: Any, canned_server: CannedServer, state: llmpool.StateConfig, limiter: str
) -> None:
    """A JSON call with no limiter, the in-process one and the Redis one (a requests and
    tokens budget, or requests only): one round trip to Redis per call."""
    plugins = [] if limiter == "none" else ["ratelimit"]
    settings = REQUESTS_ONLY if limiter == "redis-requests-only" else HUGE
    calls = 0
    with llmpool.Client(
        canned_server.base_url,
        "k",
        plugins=plugins,
        plugin_settings=settings,
        state=state if limiter.startswith("redis") else None,
    ) as client:

        def call() -> object:
            nonlocal calls
            calls += 1
            return client.chat("canned-model", MESSAGES, max_tokens=50)

        _bench(benchmark, call)
        if limiter.startswith("redis"):
            stats = client.stats()["state"]
            assert stats["errors"] == 0
            assert stats["round_trips"] - stats["script_loads"] == calls


@pytest.mark.benchmark(group="state: cache hit vs a 20 ms call")
@pytest.mark.parametrize("where", ["no-cache-20ms-server", "memory", "redis"])
def test_cache_hit(benchmark: Any, state: llmpool.StateConfig, where: str) -> None:
    """A deterministic call answered by a 20 ms server, the in-process cache or Redis."""
    plugins = [] if where.startswith("no-cache") else ["cache"]
    with (
        MockLLMServer(latency=0.02) as server,
        llmpool.Client(
            server.base_url, "k", plugins=plugins, state=state if where == "redis" else None
        ) as client,
    ):
        _bench(benchmark, lambda: client.chat("mock-model", MESSAGES, temperature=0))
        if plugins:
            assert len(server.requests) == 1  # every measured call was a hit
