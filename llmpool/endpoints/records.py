"""What the health book keeps and answers: endpoint states, picks,
outcomes, changes of state, and one endpoint's record.

Values (immutable) except :class:`Record`, which the book's lock guards.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from llmpool.endpoints.model import Endpoint
from llmpool.endpoints.window import Window

__all__ = [
    "COOLING",
    "HALF_OPEN",
    "HEALTHY",
    "PROBE_POLL",
    "Outcome",
    "Pick",
    "Record",
    "StateChange",
]

HEALTHY = "healthy"
COOLING = "cooling"
HALF_OPEN = "half_open"

#: How long a pick waits when every candidate is half-open with its probe in flight.
PROBE_POLL = 0.05


class Pick(NamedTuple):
    """The answer of :meth:`HealthBook.pick`: an endpoint (*name*), or, when
    every candidate is cooling down, the seconds until the first may take a
    call (*wait*). Immutable."""

    name: str | None
    wait: float = 0.0
    probe: bool = False


@attrs.frozen
class Outcome:
    """How one attempt at an endpoint ended, as the health book counts it."""

    #: The endpoint answered as a working server would (a 4xx counts as working).
    ok: bool
    #: Seconds to the answer (None: not measured).
    latency: float | None = None
    #: The connection could not be opened or broke before any answer.
    connection_failure: bool = False
    #: The server asked to wait this long (429/503 ``Retry-After``).
    retry_after: float | None = None
    #: A short description of the error (type and message), for stats and errors.
    error: str | None = None


@attrs.frozen
class StateChange:
    """An endpoint changed state (reported to plugins and the log, once)."""

    endpoint: str
    old: str
    new: str
    reason: str
    #: Seconds of the cool-down that began (None for other changes).
    cooldown: float | None = None


class Record:
    """One endpoint's state. Guarded by the book's lock."""

    __slots__ = (
        "consecutive",
        "cooldowns",
        "endpoint",
        "failing",
        "failures",
        "in_flight",
        "last_error",
        "latency",
        "name",
        "pick",
        "probing",
        "rank_latency",
        "rejoined",
        "share",
        "state",
        "streak",
        "until",
        "weight",
        "window",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.weight = endpoint.weight
        self.state = HEALTHY
        self.window = Window()
        self.consecutive = 0
        self.until = 0.0
        self.streak = 0
        self.probing = False
        self.in_flight = 0
        #: Calls counted for weighted round-robin: the calls routed here, plus
        #: ``rejoined`` (raised to its peers' level when it comes back, so a
        #: recovered endpoint is not flooded).
        self.share = 0
        self.rejoined = 0
        self.failures = 0
        self.cooldowns = 0
        self.latency: float | None = None
        #: ``latency``, or -1.0 while unmeasured (what the built-in strategies sort by).
        self.rank_latency = -1.0
        #: The Pick that sends an ordinary (not probe) call here (immutable, shared).
        self.pick = Pick(self.name)
        self.last_error: str | None = None
        self.failing = False
