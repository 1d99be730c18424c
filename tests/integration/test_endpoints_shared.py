"""Endpoint cool-downs shared between clients (as between processes) through the state backend."""

# ruff: noqa: F811 (the fixtures imported from redis_support are named as parameters)

from __future__ import annotations

from doubles import refused_url
from redis_support import (  # noqa: F401 (fixtures)
    prefix,
    redis_url_fixture,
)

import llmpool
from llmpool.endpoints import COOLING, HEALTHY, Endpoint, HealthBook, HealthConfig
from llmpool.endpoints.routing import default
from llmpool.shared_health import SHARED_REASON, SharedCooldowns
from llmpool.state import MemoryBackend, StateConfig
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]
HEALTH = HealthConfig(consecutive_failures=1, cooldown=30.0)


def test_a_cool_down_reaches_another_process_through_redis(
    redis_url_fixture: str, prefix: str
) -> None:
    """A cool-down client A decides keeps client B (its own health book) off the endpoint."""
    dead = refused_url()
    state = StateConfig(url=redis_url_fixture, key_prefix=prefix, timeout=2.0)  # a busy CI box
    with MockLLMServer() as server:
        eps = [
            Endpoint(name="dead", base_url=dead, api_key="k"),
            Endpoint(name="live", base_url=server.base_url, api_key="k"),
        ]
        with (
            llmpool.Client(endpoints=eps, health=HEALTH, state=state, routing="round_robin") as a,
            llmpool.Client(endpoints=eps, health=HEALTH, state=state, routing="round_robin") as b,
        ):
            assert a.chat("m", HI).endpoint == "live"  # dead refused, cooled, shared
            assert a.stats()["endpoints"]["dead"]["state"] == COOLING
            for _ in range(4):
                assert b.chat("m", HI).endpoint == "live"
            seen_by_b = b.stats()["endpoints"]["dead"]
            assert seen_by_b["state"] == COOLING
            assert seen_by_b["requests"] == 0 and seen_by_b["failures"] == 0
            assert seen_by_b["cooldown_left"] > 20.0
            assert b._group.shared is not None and b._group.shared.applied == 1  # type: ignore[union-attr]


def test_a_shared_cool_down_only_extends_and_uses_one_clock() -> None:
    """Shared cool-downs never shorten a local one; an expired one is ignored."""
    now = [1000.0]
    wall = [5000.0]
    backend = MemoryBackend(wall_clock=lambda: wall[0])  # the backend's clock decides expiry
    endpoints = [Endpoint(name="a", base_url="http://a.test/v1")]
    book = HealthBook(endpoints, HealthConfig(), default, clock=lambda: now[0])
    shared = SharedCooldowns(
        backend,
        book,
        {"a": "http://a.test/v1"},
        interval=1.0,
        clock=lambda: now[0],
        wall=lambda: wall[0],
    )
    ident = next(iter(shared._ids.values()))
    backend.set_cooldown("endpoints", ident, 4000.0)  # long expired on the wall clock
    shared.sync()
    assert book.stats()["a"]["state"] == HEALTHY
    backend.set_cooldown("endpoints", ident, wall[0] + 10.0)
    shared.sync()  # within the interval: not read yet
    assert book.stats()["a"]["state"] == HEALTHY
    now[0] += 1.5
    wall[0] += 1.5
    shared.sync()
    assert book.stats()["a"]["state"] == COOLING
    assert book.stats()["a"]["cooldown_left"] == 8.5
    book.cool_until("a", now[0] + 60.0, "local")
    now[0] += 1.5
    wall[0] += 1.5
    shared.sync()
    assert book.stats()["a"]["cooldown_left"] == 60.0 - 1.5  # the longer local one stands
    assert shared.applied == 1


def test_a_shared_cool_down_is_not_published_back() -> None:
    """A cool-down learnt from the backend is applied, not written back."""
    backend = MemoryBackend()
    endpoints = [Endpoint(name="a", base_url="http://a.test/v1")]
    book = HealthBook(endpoints, HealthConfig(), default)
    shared = SharedCooldowns(backend, book, {"a": "http://a.test/v1"})
    book.on_change = shared.publish
    book.cool_until("a", book.clock() + 5.0, SHARED_REASON)
    assert shared.published == 0
    book.cool_until("a", book.clock() + 50.0, "local decision")  # extends: no new change
    assert backend.get_cooldowns("endpoints") == {}
