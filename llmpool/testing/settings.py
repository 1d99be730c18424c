"""How the mock server answers: one frozen value, swapped whole by ``configure()``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.testing.faults import Fault, parse_faults
from llmpool.validators import (
    boolean,
    non_negative_number,
    optional,
    optional_str,
    positive_int,
    positive_number,
)

__all__ = ["DEFAULT_REPLY", "MockSettings"]

#: The reply text when none is configured.
DEFAULT_REPLY = "Hello from the mock server."


def _faults(value: str | Fault | Iterable[Fault | str]) -> tuple[Fault, ...]:
    if isinstance(value, str):
        return parse_faults(value)
    if isinstance(value, Fault):
        return (value,)
    out: list[Fault] = []
    for item in value:
        out.extend(parse_faults(item) if isinstance(item, str) else [item])
    return tuple(out)


def _arguments(value: str | Mapping[str, Any]) -> str:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError(
                f"tool_arguments must be a JSON object, got {value!r}", key="tool_arguments"
            )
        return value
    return json.dumps(dict(value))


def _rate(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= 1:
        raise ConfigError(
            f"{attribute.name} must be a number in [0, 1], got {value!r}",
            key=attribute.name,
            value=value,
        )


def _models(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _text(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{attribute.name} must be a string, got {value!r}", key=attribute.name)


def _int_or_none(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{attribute.name} must be an integer or None", key=attribute.name)


@attrs.frozen(kw_only=True)
class MockSettings:
    """What the mock server answers and how it misbehaves. Immutable; share freely.

    Times are in seconds. The server reads one snapshot per request, so
    :meth:`MockLLMServer.configure <llmpool.testing.MockLLMServer.configure>`
    takes effect from the next request on.
    """

    #: The text every completion replies with.
    reply: str = attrs.field(default=DEFAULT_REPLY, validator=_text)
    #: Reply with the last user message instead of ``reply``.
    echo: bool = attrs.field(default=False, validator=boolean)
    #: Split a streamed reply into this many chunks (by words); None: one per word.
    stream_chunks: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: Wait before each response's headers.
    latency: float = attrs.field(default=0.0, validator=non_negative_number)
    #: Wait before each stream chunk.
    chunk_latency: float = attrs.field(default=0.0, validator=non_negative_number)
    #: Length of each embedding vector (a request's ``dimensions`` overrides it).
    embedding_dim: int = attrs.field(default=8, validator=positive_int)
    #: The ids ``GET /v1/models`` lists.
    models: tuple[str, ...] = attrs.field(default=("mock-model",), converter=_models)
    #: When a request offers ``tools``, call the tool of this name instead of replying.
    tool_call: str | None = attrs.field(default=None, validator=optional_str)
    #: The arguments of that call: a JSON object (text or mapping).
    tool_arguments: str = attrs.field(default="{}", converter=_arguments)
    #: Probability (0..1) that a request without a scripted fault gets a random one.
    fault_rate: float = attrs.field(default=0.0, validator=_rate)
    #: The faults random injection chooses from (``Fault`` values or text specs).
    random_faults: tuple[Fault, ...] = attrs.field(
        factory=lambda: (Fault.status(500), Fault.status(503)), converter=_faults
    )
    #: Seed of the random injection (None: unpredictable). Setting it reseeds.
    seed: int | None = attrs.field(default=None, validator=_int_or_none)
    #: After serving this many requests on a connection, close it silently.
    close_after_requests: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: Serve this many requests on a connection; read the next one and close unanswered.
    drop_after_requests: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: Close a connection idle this long between requests, without telling the client.
    idle_timeout: float | None = attrs.field(default=None, validator=optional(positive_number))

    def __attrs_post_init__(self) -> None:
        if self.fault_rate > 0 and not self.random_faults:
            raise ConfigError("fault_rate > 0 needs random_faults", key="random_faults")
