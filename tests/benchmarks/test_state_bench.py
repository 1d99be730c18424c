"""Shared state per call: the Redis rate limiter over no limiter (one round trip on
loopback), and a cache hit through Redis against a real call to a 20 ms server and
against the in-process cache. Run side by side (the limiters' added cost per call is
printed after the module)::

    python -m pytest tests/benchmarks/test_state_bench.py --benchmark-only -p no:randomly
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CannedServer,
    added_per_call,
    load_module,
    measure_interleaved,
    print_lines,
    rounds_of,
)

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
    yield from _state()


def _state() -> Iterator[llmpool.StateConfig]:
    """A state config with a key prefix of its own, its keys deleted afterwards."""
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


LIMITER_GROUP = "state: rate limiter per call (canned server)"
CALLS_PER_ROUND = 20  # one round is ~5 ms
#: Medians (seconds per round) and the interleaved "none" medians, by group and row.
RESULTS: dict[str, dict[str, dict[str, float]]] = {}
#: The limiters: plugin settings, call keywords. "redis-usage-over" sets no max_tokens,
#: so every call's usage exceeds its reservation (a prompt estimate only) and its
#: reconciliation is sent at once (without waiting for the reply).
LIMITERS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "none": (None, {"max_tokens": 50}),
    "memory": (HUGE, {"max_tokens": 50}),
    "redis": (HUGE, {"max_tokens": 50}),
    "redis-requests-only": (REQUESTS_ONLY, {"max_tokens": 50}),
    "redis-usage-over": (HUGE, {}),
}


def _limited_client(
    canned_server: CannedServer, state: llmpool.StateConfig, limiter: str
) -> llmpool.Client:
    settings, _ = LIMITERS[limiter]
    return llmpool.Client(
        canned_server.base_url,
        "k",
        plugins=[] if settings is None else ["ratelimit"],
        plugin_settings=settings,
        state=state if limiter.startswith("redis") else None,
    )


@pytest.fixture(scope="module")
def module_state() -> Iterator[llmpool.StateConfig]:
    yield from _state()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the added cost per call once the module has run."""
    yield
    rows = RESULTS.get(LIMITER_GROUP, {})
    none = rows.get("none")
    if none is None:
        return
    per = CALLS_PER_ROUND * 1e-6  # seconds per round -> us per call
    lines = ["rate limiter, added per call over no limiter (median; side by side | interleaved):"]
    for row, entry in rows.items():
        if row == "none" or "interleaved_median" not in entry:
            continue
        side, mixed = added_per_call(entry, none, CALLS_PER_ROUND)
        lines.append(
            f"  {row}: {side:+.1f} us | {mixed:+.1f} us "
            f"({entry['median'] / per:.1f} us per call; no limiter {none['median'] / per:.1f} | "
            f"{entry['interleaved_median'] / per:.1f} us)"
        )
    print_lines(request, lines)


@pytest.mark.benchmark(group=LIMITER_GROUP)
@pytest.mark.parametrize("limiter", list(LIMITERS))
def test_rate_limiter_per_call(
    benchmark: Any, canned_server: CannedServer, module_state: llmpool.StateConfig, limiter: str
) -> None:
    """A JSON call with no limiter, the in-process one and the Redis one (a requests and
    tokens budget, requests only, usage over the reservation), rounds of 20 calls, each
    round of a limiter after a round without one (the interleaved figure): one round trip
    to Redis per call."""
    benchmark.group = LIMITER_GROUP
    _, kwargs = LIMITERS[limiter]
    counted = [0]
    with (
        _limited_client(canned_server, module_state, limiter) as client,
        _limited_client(canned_server, module_state, "none") as plain,
    ):

        def call() -> object:
            counted[0] += 1
            return client.chat("canned-model", MESSAGES, **kwargs)

        def bare() -> object:
            return plain.chat("canned-model", MESSAGES, max_tokens=50)

        for _ in range(50):  # warm: connections open, scripts loaded
            call()
            bare()
        other = None if limiter == "none" else rounds_of(CALLS_PER_ROUND, bare)
        measure_interleaved(
            RESULTS, benchmark, limiter, rounds_of(CALLS_PER_ROUND, call), other, rounds=300
        )
        if limiter.startswith("redis"):
            stats = client.stats()["state"]
            assert stats["errors"] == 0
            posted = stats["sent_without_waiting"]
            assert stats["round_trips"] - stats["script_loads"] == counted[0]  # one per call
            assert posted == (counted[0] if limiter == "redis-usage-over" else 0)


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
