"""The ``otel`` plugin's settings, conventions and helpers: what it records and
how, kept apart from the hooks in :mod:`llmpool.plugins.builtin.otel`.

Values and pure functions; thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from llmpool.exceptions import ConfigError
from llmpool.validators import boolean

__all__ = [
    "DURATION_BUCKETS",
    "MAX_MESSAGE",
    "OPERATION_NAMES",
    "REQUEST_PARAMS",
    "TOKEN_BUCKETS",
    "Call",
    "OtelSettings",
    "error_attributes",
    "histogram",
    "input_messages",
    "retry_reason",
    "server_attributes",
]

#: llmpool's operations as the conventions' ``gen_ai.operation.name`` values
#: (an operation not listed keeps its own name).
OPERATION_NAMES: Mapping[str, str] = {
    "chat": "chat",
    "complete": "text_completion",
    "embed": "embeddings",
}

#: Bucket boundaries the conventions advise (seconds; tokens).
DURATION_BUCKETS = tuple(round(0.01 * 2**i, 2) for i in range(14))  # 0.01 s ... 81.92 s
TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1 ... 67,108,864

#: Characters of an error message kept as the span's status description.
MAX_MESSAGE = 300

#: The request payload keys read into ``gen_ai.request.*`` attributes.
REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"),
)


def _optional_callable(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(
            f"{attribute.name} must be a callable returning the pool's statistics "
            f"(such as pool.get_stats), got {value!r}",
            key=attribute.name,
            value=value,
        )


def _server_url(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{attribute.name} must be an http(s) URL such as the client's base_url, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class OtelSettings:
    """The ``otel`` plugin's settings. Immutable."""

    #: A TracerProvider; None for OpenTelemetry's global one.
    tracer_provider: Any = None
    #: A MeterProvider; None for OpenTelemetry's global one.
    meter_provider: Any = None
    #: Record prompts and completions (``gen_ai.input.messages``,
    #: ``gen_ai.output.messages``). Off by default, as the conventions require.
    capture_content: bool = attrs.field(default=False, validator=boolean)
    #: Where the client's calls go (its base_url), for ``server.address`` and
    #: ``server.port``: the plugin API does not tell a plugin the URL.
    server_url: str | None = attrs.field(default=None, validator=_server_url)
    #: A callable returning the pool's statistics (``pool.get_stats``); with it
    #: the plugin reports gauges of connections in use, idle and callers waiting.
    pool_stats: Callable[[], Mapping[str, Any]] | None = attrs.field(
        default=None, validator=_optional_callable
    )


class Call:
    """One call's telemetry, kept in ``ctx.state["otel"]``. Confined to the call's thread."""

    __slots__ = ("attempt_started", "attrs", "ended", "first_chunk", "span")

    def __init__(self, span: Any, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attrs = attributes  # the metric attributes
        self.attempt_started = 0.0
        self.first_chunk: float | None = None
        self.ended = False


def histogram(
    meter: Any, name: str, unit: str, description: str, buckets: tuple[float, ...]
) -> Any:
    """A histogram with the conventions' advised buckets (opentelemetry-api
    1.23+; older APIs take the SDK's defaults)."""
    try:
        return meter.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=list(buckets),
        )
    except TypeError:  # pragma: no cover - opentelemetry-api < 1.23
        return meter.create_histogram(name, unit=unit, description=description)


def server_attributes(url: str | None) -> dict[str, Any]:
    if url is None:
        return {}
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname, "server.port": port}


def error_attributes(error: BaseException) -> dict[str, Any]:
    attributes: dict[str, Any] = {"error.type": type(error).__name__}
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        attributes["http.response.status_code"] = status
    return attributes


def retry_reason(error: BaseException) -> str:
    """Why an attempt was retried, in a few words (never a body or a header)."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status}"
    return type(error).__name__


def input_messages(payload: Mapping[str, Any]) -> str:
    """The request's prompt in the conventions' ``gen_ai.input.messages`` shape (JSON)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        prompt = payload.get("prompt", payload.get("input"))
        messages = [{"role": "user", "content": prompt}] if prompt is not None else []
    shaped = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        parts = (
            [{"type": "text", "content": content}]
            if isinstance(content, str)
            else list(content)
            if isinstance(content, list)
            else []
        )
        shaped.append({"role": message.get("role", "user"), "parts": parts})
    return json.dumps(shaped, default=str)
