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
from operator import attrgetter
from typing import Any, NamedTuple

from llmpool.exceptions import ConfigError

__all__ = [
    "ROUTING",
    "EndpointView",
    "KeyedStrategy",
    "Strategy",
    "default",
    "least_in_flight",
    "lowest_latency",
    "resolve_strategy",
    "round_robin",
]


class EndpointView(NamedTuple):
    """What a strategy sees of one candidate. Immutable (a named tuple: one is
    built per candidate per pick, so it must be cheap)."""

    name: str
    weight: float
    in_flight: int
    #: Calls counted for weighted round-robin (a recovered endpoint rejoins
    #: at its peers' level).
    share: int
    #: Average seconds to an answer (None: not measured yet).
    latency: float | None
    #: Its last attempt failed (it sorts after its peers on ties).
    failing: bool = False


#: A routing strategy: the index of the chosen candidate (never empty).
Strategy = Callable[[Sequence[EndpointView]], int]


class KeyedStrategy:
    """A strategy that takes the candidate with the smallest ``key(view)``
    (the first on ties). The health book applies *record_key* (*key* when
    not given) to its own records instead of building views: the records
    carry the views' attributes, and ``rank_latency`` (the latency, or -1.0
    while unmeasured), so a built-in key can be an ``operator.attrgetter``
    that runs in C. Holds no state: thread-safe."""

    def __init__(
        self,
        key: Callable[[Any], Any],
        name: str,
        doc: str,
        record_key: Callable[[Any], Any] | None = None,
    ) -> None:
        self.key = key
        self.record_key = key if record_key is None else record_key
        self.__name__ = name
        self.__doc__ = doc

    def __call__(self, candidates: Sequence[EndpointView]) -> int:
        key = self.key
        return min(range(len(candidates)), key=lambda i: key(candidates[i]))

    def __repr__(self) -> str:
        return f"<routing strategy {self.__name__}>"


round_robin = KeyedStrategy(
    lambda v: (v.share + 1) / v.weight,
    "round_robin",
    "Weighted round-robin: the lowest ``(share + 1) / weight``.",
)
least_in_flight = KeyedStrategy(
    lambda v: (v.in_flight, v.failing),
    "least_in_flight",
    "The fewest calls in flight; ties go to one whose last call did not fail, "
    "then to the group's order.",
    attrgetter("in_flight", "failing"),
)
lowest_latency = KeyedStrategy(
    lambda v: (v.failing, -1.0 if v.latency is None else v.latency),
    "lowest_latency",
    "The lowest latency average (an unmeasured endpoint first), an endpoint "
    "whose last call failed after the others.",
    attrgetter("failing", "rank_latency"),
)
default = KeyedStrategy(
    lambda v: (v.in_flight, v.failing, -1.0 if v.latency is None else v.latency),
    "default",
    "The fewest in flight; ties go to one whose last call did not fail, then to "
    "the lowest latency (unmeasured first).",
    attrgetter("in_flight", "failing", "rank_latency"),
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
