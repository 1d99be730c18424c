"""Endpoint groups: one client over several deployments.

The values (:class:`Endpoint`, :class:`HealthConfig`), the routing
strategies (pure functions over a snapshot, :mod:`llmpool.endpoints.routing`),
the health book (failure windows, cool-downs, probes,
:mod:`llmpool.endpoints.health`) and how an error reads to a group
(:mod:`llmpool.endpoints.outcomes`). This package imports values only: the
client wires it (:mod:`llmpool.group`, :mod:`llmpool.group_path`). See
docs/endpoints.rst.
"""

from __future__ import annotations

from llmpool.endpoints.health import COOLING, HALF_OPEN, HEALTHY, HealthBook, Outcome, StateChange
from llmpool.endpoints.model import Endpoint, HealthConfig
from llmpool.endpoints.routing import ROUTING, EndpointView, Strategy

__all__ = [
    "COOLING",
    "HALF_OPEN",
    "HEALTHY",
    "ROUTING",
    "Endpoint",
    "EndpointView",
    "HealthBook",
    "HealthConfig",
    "Outcome",
    "StateChange",
    "Strategy",
]
