"""Routing: which endpoint takes the next attempt.

A strategy is a small pure function ``(candidates) -> index`` over a
snapshot of the candidates' state (:class:`EndpointView`, in the group's
order); the health book filters the candidates first (endpoints that serve
the model and are not cooling down) and calls the strategy under its lock,
so the choice and the in-flight count it bumps agree. Pure functions:
thread-safe, testable without a socket.

- ``round_robin``: weighted round-robin, the endpoint whose share of the
  calls so far is furthest below its weight (smooth: 3:1 gives a a b a ...).
- ``least_in_flight``: the fewest calls in flight (ties: the group's order).
- ``lowest_latency``: the lowest average time to an answer (unmeasured first).
- ``default``: the fewest in flight, ties broken by latency.

An endpoint whose last attempt failed sorts after its peers on ties (it has
no latency to show, and "unmeasured first" would send it the next call).

A callable with the same signature may be given instead of a name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from llmpool.exceptions import ConfigError

__all__ = [
    "ROUTING",
    "EndpointView",
    "Strategy",
    "default",
    "least_in_flight",
    "lowest_latency",
    "resolve_strategy",
    "round_robin",
]


@attrs.frozen
class EndpointView:
    """What a strategy sees of one candidate. Immutable."""

    name: str
    weight: float
    in_flight: int
    #: Calls routed here so far.
    routed: int
    #: Average seconds to an answer (None: not measured yet).
    latency: float | None
    #: Its last attempt failed (it sorts after its peers on ties).
    failing: bool = False


#: A routing strategy: the index of the chosen candidate (never empty).
Strategy = Callable[[Sequence[EndpointView]], int]


def _latency(view: EndpointView) -> float:
    return -1.0 if view.latency is None else view.latency


def round_robin(candidates: Sequence[EndpointView]) -> int:
    """Weighted round-robin: the lowest ``(routed + 1) / weight``."""
    return min(
        range(len(candidates)), key=lambda i: (candidates[i].routed + 1) / candidates[i].weight
    )


def least_in_flight(candidates: Sequence[EndpointView]) -> int:
    """The fewest calls in flight; ties go to one whose last call did not
    fail, then to the group's order."""
    return min(
        range(len(candidates)), key=lambda i: (candidates[i].in_flight, candidates[i].failing)
    )


def lowest_latency(candidates: Sequence[EndpointView]) -> int:
    """The lowest latency average (an unmeasured endpoint first), an endpoint
    whose last call failed after the others."""
    return min(
        range(len(candidates)), key=lambda i: (candidates[i].failing, _latency(candidates[i]))
    )


def default(candidates: Sequence[EndpointView]) -> int:
    """The fewest in flight; ties go to one whose last call did not fail,
    then to the lowest latency (unmeasured first)."""
    return min(
        range(len(candidates)),
        key=lambda i: (candidates[i].in_flight, candidates[i].failing, _latency(candidates[i])),
    )


#: The strategies by name.
ROUTING: dict[str, Strategy] = {
    "default": default,
    "round_robin": round_robin,
    "least_in_flight": least_in_flight,
    "lowest_latency": lowest_latency,
}


def resolve_strategy(routing: str | Strategy) -> Strategy:
    """A strategy by name, or a callable as it is."""
    if callable(routing):
        return routing
    try:
        return ROUTING[routing]
    except (KeyError, TypeError):
        raise ConfigError(
            f"routing must be one of {sorted(ROUTING)} or a callable, got {routing!r}",
            key="routing",
            value=routing,
        ) from None
