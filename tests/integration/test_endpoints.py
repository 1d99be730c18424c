"""A client over an endpoint group, against several MockLLMServers and a refused port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from doubles import FakeSleep, refused_url

import llmpool
from llmpool.endpoints import COOLING, HEALTHY, StateChange
from llmpool.plugins import LLMPlugin
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]
FAST = llmpool.HealthConfig(cooldown=0.2, consecutive_failures=1, min_calls=2)


@pytest.fixture
def servers() -> Iterator[list[MockLLMServer]]:
    with MockLLMServer() as a, MockLLMServer() as b, MockLLMServer() as c:
        yield [a, b, c]


def endpoint(name: str, server: MockLLMServer | None, **kw: object) -> llmpool.Endpoint:
    url = server.base_url if server is not None else refused_url()
    return llmpool.Endpoint(name=name, base_url=url, api_key=f"sk-{name}", **kw)  # type: ignore[arg-type]


def test_one_client_over_three_endpoints_uses_each_ones_key(servers: list[MockLLMServer]) -> None:
    """Each endpoint gets its own API key; results name the endpoint that answered."""
    eps = [endpoint(n, s) for n, s in zip("abc", servers, strict=True)]
    with llmpool.Client(endpoints=eps, routing="round_robin") as client:
        answered = [client.chat("m", HI).endpoint for _ in range(6)]
    assert sorted(answered) == ["a", "a", "b", "b", "c", "c"]
    for name, server in zip("abc", servers, strict=True):
        assert {r.header("authorization") for r in server.requests} == {f"Bearer sk-{name}"}


def test_a_refused_endpoint_fails_over_without_waiting(servers: list[MockLLMServer]) -> None:
    """A connection refused sends the next attempt to another endpoint at once, no backoff."""
    sleep = FakeSleep()
    eps = [endpoint("dead", None), endpoint("a", servers[0])]
    with llmpool.Client(endpoints=eps, health=FAST, routing="least_in_flight", sleep=sleep) as c:
        reply = c.chat("m", HI)
        stats = c.stats()
    assert reply.endpoint == "a"
    assert sleep.waits == []
    assert stats["endpoints"]["dead"]["state"] == COOLING
    assert stats["endpoints"]["dead"]["last_error"].startswith("ConnectError")
    assert stats["client"]["retries"] == 1


def test_failover_keeps_the_idempotency_key(servers: list[MockLLMServer]) -> None:
    """The attempt at the second endpoint carries the first attempt's Idempotency-Key."""
    servers[0].inject("status=503")
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="least_in_flight") as client:
        assert client.chat("m", HI).endpoint == "b"
    first = servers[0].requests[0].header("idempotency-key")
    assert first and servers[1].requests[0].header("idempotency-key") == first


def test_a_request_error_never_fails_over(servers: list[MockLLMServer]) -> None:
    """A 400 is the request's fault: no other endpoint is tried."""
    servers[0].inject("status=400,message=temperature must be <= 2")
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="least_in_flight") as client:
        with pytest.raises(llmpool.BadRequestError):
            client.chat("m", HI)
        assert client.stats()["endpoints"]["a"]["state"] == HEALTHY
    assert servers[1].request_count == 0


def test_only_endpoints_serving_the_model_are_candidates(servers: list[MockLLMServer]) -> None:
    """A call for a model goes only to endpoints listing it (or listing none)."""
    eps = [
        endpoint("small", servers[0], models=("small",)),
        endpoint("big", servers[1], models=("big",)),
    ]
    with llmpool.Client(endpoints=eps) as client:
        assert {client.chat("big", HI).endpoint for _ in range(4)} == {"big"}
        with pytest.raises(llmpool.EndpointsUnavailable, match="no endpoint serves"):
            client.chat("huge", HI)
    assert servers[0].request_count == 0


def test_every_endpoint_cooling_waits_for_the_first_within_the_deadline(
    servers: list[MockLLMServer],
) -> None:
    """With every endpoint cooling, the call waits for the first to come back, then succeeds."""
    sleep = FakeSleep()
    servers[0].inject("status=503,retry_after=0.3")
    eps = [endpoint("a", servers[0])]
    retry = llmpool.RetryPolicy(max_attempts=1)
    with llmpool.Client(endpoints=eps, health=FAST, retry=retry, sleep=sleep) as client:
        with pytest.raises(llmpool.InternalServerError):
            client.chat("m", HI)
        assert client.stats()["endpoints"]["a"]["state"] == COOLING
        reply = client.chat("m", HI, deadline=5.0)  # waits (really: the clock must move)
    assert reply.endpoint == "a"
    assert sleep.waits and sum(sleep.waits) > 0


def test_every_endpoint_cooling_beyond_the_deadline_names_each(
    servers: list[MockLLMServer],
) -> None:
    """When waiting does not fit the deadline, one typed error names each endpoint and error."""
    servers[0].inject("status=429,retry_after=30")
    eps = [endpoint("dead", None), endpoint("a", servers[0])]
    retry = llmpool.RetryPolicy(max_attempts=1)
    with llmpool.Client(endpoints=eps, health=FAST, retry=retry) as client:
        for _ in range(2):
            with pytest.raises((llmpool.ConnectError, llmpool.RateLimitError)):
                client.chat("m", HI)
        states = {n: e["state"] for n, e in client.stats()["endpoints"].items()}
        assert states == {"dead": COOLING, "a": COOLING}
        with pytest.raises(llmpool.EndpointsUnavailable) as info:
            client.chat("m", HI, deadline=0.1)
    err = info.value
    assert set(err.endpoints) == {"dead", "a"}
    assert err.endpoints["dead"].startswith("ConnectError")
    assert err.endpoints["a"].startswith("RateLimitError")
    assert "dead" in str(err) and "a:" in str(err)


def test_fallback_models_after_the_models_endpoints_are_exhausted(
    servers: list[MockLLMServer],
) -> None:
    """When every endpoint of a model fails, its fallback model answers, and says so."""
    servers[0].inject("status=503", count=10)
    eps = [
        endpoint("big", servers[0], models=("big",)),
        endpoint("small", servers[1], models=("small",)),
    ]
    retry = llmpool.RetryPolicy(max_attempts=2, base_delay=0)
    with llmpool.Client(endpoints=eps, fallbacks={"big": ["small"]}, retry=retry) as client:
        reply = client.chat("big", HI)
    assert reply.endpoint == "small"
    assert json.loads(servers[1].requests[0].body)["model"] == "small"
    assert servers[0].request_count == 2


def test_context_window_fallback_on_prompt_too_long(servers: list[MockLLMServer]) -> None:
    """A "prompt too long" 400 moves the call to the context-window fallback model."""
    servers[0].inject("status=400,message=This model's maximum context length is 8192 tokens")
    eps = [endpoint("a", servers[0])]
    with llmpool.Client(endpoints=eps, context_window_fallbacks={"m": ["m-long"]}) as client:
        reply = client.chat("m", HI)
    assert reply.endpoint == "a"
    assert [json.loads(r.body)["model"] for r in servers[0].requests] == ["m", "m-long"]


def test_a_stream_fails_over_before_its_first_chunk(servers: list[MockLLMServer]) -> None:
    """A stream refused with 503 reopens at another endpoint; the text arrives whole."""
    servers[0].inject("status=503")
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="least_in_flight") as client:
        with client.chat("m", HI, stream=True) as stream:
            text = "".join(chunk.delta for chunk in stream)
        stats = client.stats()["endpoints"]
    assert text == "Hello from the mock server."
    assert servers[1].request_count == 1
    assert stats["a"]["in_flight"] == stats["b"]["in_flight"] == 0


def test_a_stream_never_fails_over_after_a_chunk(servers: list[MockLLMServer]) -> None:
    """A stream that broke after delivering a chunk raises; no other endpoint is tried."""
    servers[0].inject("disconnect=2")
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="least_in_flight") as client:
        with pytest.raises(llmpool.StreamInterrupted):
            with client.chat("m", HI, stream=True) as stream:
                for _ in stream:
                    pass
        assert client.stats()["endpoints"]["a"]["failures"] == 1
    assert servers[1].request_count == 0


def test_a_recovered_endpoint_is_probed_and_gets_traffic_again(
    servers: list[MockLLMServer],
) -> None:
    """After its cool-down one probe goes to the endpoint; it passes, traffic returns."""
    servers[0].inject("status=503", count=1)
    health = llmpool.HealthConfig(cooldown=0.05, consecutive_failures=1, min_calls=1)
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, health=health, routing="least_in_flight") as client:
        client.chat("m", HI)  # a: 503 -> cooling; b answers
        assert client.stats()["endpoints"]["a"]["state"] == COOLING
        servers[0].wait_for_requests(1)
        time.sleep(0.1)  # let the 0.05 s cool-down pass (the test asserts counts, not time)
        assert client.chat("m", HI).endpoint == "a"  # the probe
        assert client.stats()["endpoints"]["a"]["state"] == HEALTHY


def test_state_changes_reach_plugins_once_each(servers: list[MockLLMServer]) -> None:
    """on_endpoint_state receives each change of state once."""

    class Watch(LLMPlugin):
        name = "watch"

        def __init__(self) -> None:
            self.changes: list[StateChange] = []

        def on_endpoint_state(self, change: StateChange) -> None:
            self.changes.append(change)

    watch = Watch()
    eps = [endpoint("dead", None), endpoint("a", servers[0])]
    with llmpool.Client(
        endpoints=eps, health=FAST, plugins=[watch], routing="least_in_flight"
    ) as client:
        for _ in range(5):
            client.chat("m", HI)
    assert [(c.endpoint, c.old, c.new) for c in watch.changes] == [("dead", HEALTHY, COOLING)]


def test_an_endpoint_with_its_own_cap_gets_its_own_pool(servers: list[MockLLMServer]) -> None:
    """max_connections on an endpoint gives it a pool with that cap, closed with the client."""
    eps = [endpoint("a", servers[0], max_connections=2), endpoint("b", servers[1])]
    client = llmpool.Client(endpoints=eps, routing="round_robin")
    group = client._group
    assert group is not None
    own = group.routes["a"].transport
    assert own is not client.pool and own.config.max_connections == 2  # type: ignore[attr-defined]
    assert group.routes["b"].transport is client.pool
    client.chat("m", HI)
    client.chat("m", HI)
    client.close()
    with pytest.raises(llmpool.PoolClosed):
        own.request("GET", servers[0].url("/v1/models"))


def test_base_url_and_endpoints_together_are_refused(servers: list[MockLLMServer]) -> None:
    """A client takes base_url (and api_key) or endpoints, not both."""
    with pytest.raises(llmpool.ConfigError, match="not both"):
        llmpool.Client(servers[0].base_url, endpoints=[endpoint("a", servers[0])])
    with pytest.raises(llmpool.ConfigError, match="not both"):
        llmpool.Client(api_key="sk-x", endpoints=[endpoint("a", servers[0])])


def test_active_checks_bring_a_cooled_endpoint_back(servers: list[MockLLMServer]) -> None:
    """With check_interval set, the checks' thread probes a cooled endpoint and heals it."""
    servers[0].inject("status=503")
    health = llmpool.HealthConfig(
        cooldown=0.01, consecutive_failures=1, min_calls=1, check_interval=0.02
    )
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, health=health, routing="least_in_flight") as client:
        client.chat("m", HI)
        assert servers[0].wait_for_requests(3, timeout=10.0)  # 503, then checks
        for _ in range(500):
            if client.stats()["endpoints"]["a"]["state"] == HEALTHY:
                break
            servers[0].wait_for_requests(servers[0].request_count + 1, timeout=1.0)
        assert client.stats()["endpoints"]["a"]["state"] == HEALTHY
    assert any(r.path.endswith("/models") for r in servers[0].requests)


def test_every_call_kind_goes_through_the_group(servers: list[MockLLMServer]) -> None:
    """complete, embed and models are routed like chat; embeddings name their endpoint."""
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="round_robin") as client:
        assert client.complete("m", "say hi").text
        vectors = client.embed("e", ["x", "y"])
        assert len(vectors.vectors) == 2 and vectors.endpoint in ("a", "b")
        assert client.models() == ("mock-model",)
    assert servers[0].request_count + servers[1].request_count == 3


def test_with_options_headers_reach_every_endpoint(servers: list[MockLLMServer]) -> None:
    """with_options(default_headers=...) changes every endpoint's headers, keys kept."""
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="round_robin") as client:
        tagged = client.with_options(default_headers={"X-Team": "blue"})
        tagged.chat("m", HI)
        tagged.chat("m", HI)
        assert client.stats()["endpoints"]["a"]["requests"] == 1  # one book, shared
    for name, server in (("a", servers[0]), ("b", servers[1])):
        request = server.requests[0]
        assert request.header("x-team") == "blue"
        assert request.header("authorization") == f"Bearer sk-{name}"


def test_a_group_over_the_requests_transport(servers: list[MockLLMServer]) -> None:
    """transport='requests' reaches every endpoint, its own pools included."""
    eps = [endpoint("a", servers[0], max_connections=1), endpoint("dead", None)]
    with llmpool.Client(
        endpoints=eps, transport="requests", health=FAST, routing="least_in_flight"
    ) as client:
        for _ in range(3):
            assert client.chat("m", HI).endpoint == "a"
    assert servers[0].request_count == 3


def test_an_anthropic_endpoint_beside_an_openai_one(servers: list[MockLLMServer]) -> None:
    """Each endpoint's provider shapes its own request (paths, headers, body)."""
    eps = [
        endpoint("oa", servers[0]),
        llmpool.Endpoint(
            name="an", base_url=servers[1].base_url, provider="anthropic", api_key="sk-an"
        ),
    ]
    with llmpool.Client(endpoints=eps, routing="round_robin") as client:
        answers = {client.chat("m", HI, max_tokens=16).endpoint for _ in range(2)}
    assert answers == {"oa", "an"}
    assert servers[0].requests[0].path.endswith("/chat/completions")
    assert servers[1].requests[0].path.endswith("/messages")
    assert servers[1].requests[0].header("x-api-key") == "sk-an"


def test_own_endpoint_pools_close_with_a_client_on_a_shared_pool(
    servers: list[MockLLMServer],
) -> None:
    """An endpoint's own pool closes with the client even when the main pool is the caller's."""
    shared = llmpool.ConnectionPool()
    eps = [endpoint("a", servers[0], max_connections=1)]
    client = llmpool.Client(endpoints=eps, pool=shared)
    own = client._group.routes["a"].transport  # type: ignore[union-attr]
    clone = client.with_options(timeout=5.0)
    clone.chat("m", HI)
    clone.close()  # a clone shares the group's pools: they stay open
    client.chat("m", HI)
    client.close()
    with pytest.raises(llmpool.PoolClosed):
        own.request("GET", servers[0].url("/v1/models"))
    shared.request("GET", servers[0].url("/v1/models")).read()  # the caller's pool stays open
    shared.close()


@pytest.mark.parametrize("fault", ["status=429,retry_after=120", "status=501"])
def test_an_error_the_policy_would_not_retry_still_fails_over(
    servers: list[MockLLMServer], fault: str
) -> None:
    """A Retry-After beyond max_retry_after, or a 5xx outside retry_statuses, goes elsewhere."""
    servers[0].inject(fault)
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(endpoints=eps, routing="least_in_flight") as client:
        assert client.chat("m", HI).endpoint == "b"


def test_a_call_one_provider_cannot_shape_leaves_nothing_in_flight(
    servers: list[MockLLMServer],
) -> None:
    """A call the picked endpoint's provider refuses to build frees that endpoint again."""
    eps = [
        endpoint("oa", servers[0]),
        llmpool.Endpoint(name="an", base_url=servers[1].origin, api_key="k", provider="anthropic"),
    ]
    with llmpool.Client(endpoints=eps, routing="round_robin") as client:
        refused = 0
        for _ in range(2):
            try:
                client.chat("m", HI, seed=1)  # Anthropic has no seed: ConfigError there
            except llmpool.ConfigError:
                refused += 1
        stats = client.stats()["endpoints"]
    assert refused == 1
    assert [e["in_flight"] for e in stats.values()] == [0, 0]


def test_closing_stops_the_active_checks(servers: list[MockLLMServer]) -> None:
    """client.close() ends the checks' thread, also over a caller's pool."""
    import threading

    pool = llmpool.ConnectionPool()
    eps = [endpoint("a", servers[0], max_connections=2)]
    health = llmpool.HealthConfig(check_interval=0.05)
    client = llmpool.Client(endpoints=eps, pool=pool, health=health)
    client.chat("m", HI)
    client.close()
    pool.close()
    alive = [t for t in threading.enumerate() if t.name == "llmpool-endpoint-checks"]
    assert alive == []


def test_a_forked_child_uses_a_group_whose_book_lock_was_held(
    servers: list[MockLLMServer],
) -> None:
    """The health book's lock is renewed in a forked child (no deadlock)."""
    import os
    import signal

    with llmpool.Client(endpoints=[endpoint("a", servers[0])]) as client:
        book = client._group.book  # type: ignore[union-attr]
        with book._lock:  # as if another thread were in pick() at the fork
            pid = os.fork()
            if pid == 0:
                signal.alarm(5)  # a deadlock ends the child with SIGALRM
                client.stats()
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_call_headers_win_on_every_endpoint_whatever_their_case(
    servers: list[MockLLMServer],
) -> None:
    """A call's header replaces a default header spelt differently, on each endpoint."""
    eps = [endpoint("a", servers[0]), endpoint("b", servers[1])]
    with llmpool.Client(
        endpoints=eps, routing="round_robin", default_headers={"X-Team": "blue"}
    ) as client:
        for _ in range(2):
            client.chat("m", HI, extra_headers={"x-team": "red"}, idempotency_key="k-1")
    for name, server in (("a", servers[0]), ("b", servers[1])):
        request = server.requests[0]
        assert request.header("x-team") == "red"
        assert request.header("idempotency-key") == "k-1"
        assert request.header("authorization") == f"Bearer sk-{name}"


def test_the_latency_average_is_the_time_to_the_headers(servers: list[MockLLMServer]) -> None:
    """Each attempt's headers instant is on the call's context; the average follows it."""
    seen: list[tuple[float, float | None]] = []

    class Watch(LLMPlugin):
        name = "watch"

        def after_response(
            self, ctx: llmpool.CallContext, request: object, response: object
        ) -> None:
            seen.append((ctx.started, ctx.headers_at))

    servers[0].configure(latency=0.05)
    with llmpool.Client(endpoints=[endpoint("a", servers[0])], plugins=[Watch()]) as client:
        client.chat("m", HI)
        ewma_ms = client.stats()["endpoints"]["a"]["latency_ewma_ms"]
    ((started, headers_at),) = seen
    assert headers_at is not None and headers_at > started
    assert ewma_ms is not None and ewma_ms >= 50.0  # the server waited 50 ms before its headers
    assert ewma_ms <= (headers_at - started) * 1000.0 + 1e-6  # measured from the attempt's start
