"""Routing strategies and how errors read to an endpoint group: pure functions."""

from __future__ import annotations

import pytest

from llmpool.endpoints import ROUTING, Endpoint, HealthConfig
from llmpool.endpoints.model import check_endpoints, check_fallbacks
from llmpool.endpoints.outcomes import fails_over, is_context_window_error, outcome_of
from llmpool.endpoints.routing import (
    EndpointView,
    default,
    least_in_flight,
    lowest_latency,
    resolve_strategy,
    round_robin,
)
from llmpool.exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConnectError,
    EndpointsUnavailable,
    InternalServerError,
    OverloadedError,
    PoolClosed,
    RateLimitError,
    ReadTimeout,
    StreamInterrupted,
    error_for_status,
)


def view(name: str, in_flight: int = 0, latency: float | None = None, **kw: object) -> EndpointView:
    return EndpointView(
        name,
        kw.get("weight", 1.0),
        in_flight,
        kw.get("share", 0),
        latency,
        kw.get("failing", False),
    )  # type: ignore[arg-type]


def test_default_prefers_fewest_in_flight_then_latency() -> None:
    """The default strategy takes the fewest in flight, ties by the lowest latency."""
    assert default([view("a", 2, 0.01), view("b", 1, 0.5), view("c", 1, 0.2)]) == 2


def test_a_failing_endpoint_loses_ties() -> None:
    """An endpoint whose last call failed (and so has no latency) loses a tie."""
    assert default([view("a", 0, None, failing=True), view("b", 0, 0.3)]) == 1
    assert least_in_flight([view("a", 0, failing=True), view("b", 0)]) == 1
    assert lowest_latency([view("a", 0, None, failing=True), view("b", 0, 0.3)]) == 1


def test_least_in_flight_and_lowest_latency() -> None:
    """least_in_flight counts calls; lowest_latency tries an unmeasured endpoint first."""
    assert least_in_flight([view("a", 3), view("b", 0), view("c", 0)]) == 1
    assert lowest_latency([view("a", 0, 0.2), view("b", 0, 0.1)]) == 1
    assert lowest_latency([view("a", 0, 0.2), view("b", 0, None)]) == 1


def test_round_robin_is_weighted() -> None:
    """round_robin picks the endpoint furthest below its weighted share."""
    assert round_robin([view("a", share=3, weight=3.0), view("b", share=0, weight=1.0)]) == 1
    assert round_robin([view("a", share=2, weight=3.0), view("b", share=1, weight=1.0)]) == 0


def test_strategies_by_name_or_callable() -> None:
    """A strategy is named or given as a callable; an unknown name is a ConfigError."""
    assert set(ROUTING) == {"default", "round_robin", "least_in_flight", "lowest_latency"}
    assert resolve_strategy("round_robin") is round_robin
    custom = lambda views: len(views) - 1  # noqa: E731
    assert resolve_strategy(custom) is custom
    with pytest.raises(ConfigError, match="routing"):
        resolve_strategy("fastest")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectError("refused"), True),
        (ReadTimeout("slow"), True),
        (error_for_status(429, "slow down"), True),
        (error_for_status(503, "busy"), True),
        (error_for_status(529, "overloaded"), True),
        (error_for_status(408, "timeout"), True),
        (error_for_status(400, "bad"), False),
        (error_for_status(401, "key"), False),
        (error_for_status(404, "model"), False),
        (error_for_status(422, "shape"), False),
        (PoolClosed("closed"), False),
        (EndpointsUnavailable("all cooling", model="m", endpoints={}), True),
    ],
)
def test_what_fails_over(error: Exception, expected: bool) -> None:
    """Failures of the endpoint fail over; a 4xx about the request never does."""
    assert fails_over(error) is expected


def test_a_stream_fails_over_only_before_delivery() -> None:
    """A stream broken before its first chunk fails over; after one, it does not."""
    before = StreamInterrupted("dropped")
    after = StreamInterrupted("dropped")
    after.delivered = True  # type: ignore[attr-defined]
    assert fails_over(before) and not fails_over(after)


def test_outcomes_as_the_health_book_counts_them() -> None:
    """Connection failures are marked; Retry-After of 429/503 is kept; a 4xx counts as working."""
    refused = outcome_of(ConnectError("refused"))
    assert not refused.ok and refused.connection_failure
    limited = outcome_of(error_for_status(429, "slow", retry_after=7.0))
    assert not limited.ok and limited.retry_after == 7.0 and not limited.connection_failure
    assert outcome_of(error_for_status(500, "x", retry_after=7.0)).retry_after is None
    assert outcome_of(error_for_status(401, "key")).ok
    assert outcome_of(None, 0.2).latency == 0.2
    assert isinstance(error_for_status(529, "x"), OverloadedError)
    assert isinstance(error_for_status(500, "x"), InternalServerError)
    assert isinstance(error_for_status(429, "x"), RateLimitError)
    assert isinstance(error_for_status(401, "x"), AuthenticationError)


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 8192 tokens. However, you requested 9000",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "context_length_exceeded",
    ],
)
def test_context_window_errors_are_recognised(message: str) -> None:
    """Both providers' "prompt too long" 400s read as context-window errors."""
    assert is_context_window_error(error_for_status(400, message))


def test_other_400s_are_not_context_window_errors() -> None:
    """A 400 about something else, or a 5xx with the words, is not one."""
    assert not is_context_window_error(error_for_status(400, "temperature must be <= 2"))
    assert not is_context_window_error(error_for_status(500, "maximum context length"))
    assert isinstance(error_for_status(400, "x"), BadRequestError)


def test_endpoint_values_are_checked() -> None:
    """Names must be unique and present; mappings become Endpoints; fallbacks are lists."""
    endpoints = check_endpoints([{"name": "a", "base_url": "http://a/v1", "models": "m"}])
    assert endpoints[0].models == ("m",) and endpoints[0].serves("m")
    assert not endpoints[0].serves("other") and endpoints[0].serves(None)
    with pytest.raises(ConfigError, match="unique"):
        check_endpoints(
            [Endpoint(name="a", base_url="http://a"), Endpoint(name="a", base_url="http://b")]
        )
    with pytest.raises(ConfigError, match="at least one"):
        check_endpoints([])
    with pytest.raises(ConfigError, match="weight"):
        Endpoint(name="a", base_url="http://a", weight=0)
    with pytest.raises(ConfigError, match="endpoints\\[0\\]"):
        check_endpoints([{"name": "a", "base_url": "http://a", "colour": "red"}])
    assert check_fallbacks({"big": "small"}, "fallbacks") == {"big": ("small",)}
    with pytest.raises(ConfigError, match="fallbacks"):
        check_fallbacks({"big": [1]}, "fallbacks")
    with pytest.raises(ConfigError, match="failure_rate"):
        HealthConfig(failure_rate=2)


def test_an_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key_env names the variable holding the key; unset, it is a ConfigError naming it."""
    endpoint = Endpoint(name="a", base_url="http://a", api_key_env="LLMPOOL_TEST_KEY_A")
    monkeypatch.setenv("LLMPOOL_TEST_KEY_A", "sk-from-env")
    assert endpoint.resolve_api_key() == "sk-from-env"
    assert "sk-from-env" not in repr(endpoint)
    monkeypatch.delenv("LLMPOOL_TEST_KEY_A")
    with pytest.raises(ConfigError, match="LLMPOOL_TEST_KEY_A"):
        endpoint.resolve_api_key()


def test_the_book_chooses_as_the_strategy_would() -> None:
    """The health book's shortcut over its records chooses what the pure strategy chooses."""
    from llmpool.endpoints import HealthBook, Outcome

    for strategy in ROUTING.values():
        endpoints = [
            Endpoint(name=n, base_url=f"http://{n}/v1", weight=w)
            for n, w in zip("abc", (1, 2, 3), strict=True)
        ]
        book = HealthBook(endpoints, HealthConfig(), strategy)
        for step in range(30):
            views = [
                EndpointView(r.name, r.weight, r.in_flight, r.share, r.latency, r.failing)
                for r in book._records.values()
            ]
            expected = views[strategy(views)].name
            pick = book.pick(("a", "b", "c") if step % 2 else ["a", "b", "c"])
            assert pick.name == expected, (strategy, step)
            if step % 6 == 1 and not pick.probe:  # the success path without an Outcome
                book.record_ok(pick.name or "", 0.01 * (step % 4))
            elif step % 3:
                book.record(pick.name or "", Outcome(ok=True, latency=0.01 * (step % 5)))
            elif step % 2:
                book.record(pick.name or "", Outcome(ok=False, error="x"))
