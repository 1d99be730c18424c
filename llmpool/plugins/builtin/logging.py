"""The ``logging`` plugin: one log line per call on the ``llmpool.calls`` logger.

The line carries the call id, operation, model, outcome, HTTP status,
latency, tokens, whether the connection was reused and the retries. Headers
are never logged (they carry the API key); bodies only with
``log_bodies: true``, truncated, with secret-looking payload keys masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.validators import boolean, positive_int

__all__ = ["LoggingPlugin", "LoggingSettings"]

#: Payload keys whose values are never logged, compared case-insensitively.
SECRET_KEYS = frozenset(
    {"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret", "token"}
)

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _level(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or value.upper() not in _LEVELS:
        raise ConfigError(
            f"{attribute.name} must be one of {sorted(_LEVELS)}, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class LoggingSettings:
    """The ``logging`` plugin's settings. Immutable."""

    #: The logger the lines go to.
    logger: str = "llmpool.calls"
    #: The level of the per-call line (errors use the same level).
    level: str = attrs.field(default="INFO", validator=_level)
    #: Also log the request payload and the response text (truncated).
    log_bodies: bool = attrs.field(default=False, validator=boolean)
    #: Characters kept of each body when log_bodies is on.
    max_body_chars: int = attrs.field(default=1000, validator=positive_int)


def redact(value: Any) -> Any:
    """A copy of *value* with the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: "***" if str(k).lower() in SECRET_KEYS else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text) - limit} more]"


def _response_text(result: Any) -> str:
    vectors = getattr(result, "vectors", None)
    if vectors is not None:
        return f"<{len(vectors)} vectors>"
    return str(getattr(result, "text", "") or "")


class LoggingPlugin(LLMPlugin):
    """Logs one line per call. Thread-safe: it keeps no shared mutable state."""

    name = "logging"
    version = "1.0"
    priority = 1000  # last: it sees the final result and status

    def __init__(self) -> None:
        self.settings = LoggingSettings()
        self.log = logging.getLogger(self.settings.logger)
        self._level = logging.INFO

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(LoggingSettings, self.name, context.settings)
        self.log = logging.getLogger(self.settings.logger)
        self._level = logging.getLevelNamesMapping()[self.settings.level.upper()]

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if response is None or request.stream:
            return  # a stream is logged when it ends
        outcome = "cached" if ctx.state.get("answered_by") else "ok"
        self._emit(ctx, request, outcome, usage=getattr(response, "usage", None), result=response)

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        self._emit(ctx, None, "ok", usage=getattr(stream, "usage", None), result=stream)

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        self._emit(ctx, request, "error", error=error)

    def _emit(
        self,
        ctx: CallContext,
        request: Request | None,
        outcome: str,
        *,
        usage: Any = None,
        result: Any = None,
        error: Exception | None = None,
    ) -> None:
        if ctx.state.get(self.name) or not self.log.isEnabledFor(self._level):
            return
        ctx.state[self.name] = True  # one line per call, even if a stream also fails
        fields: dict[str, Any] = {
            "call_id": ctx.call_id,
            "operation": ctx.operation,
            "model": ctx.model,
            "provider": ctx.provider,
            "outcome": outcome,
            "status": ctx.status_code,
            "latency_ms": round(ctx.elapsed * 1000, 1),
            "tokens": getattr(usage, "total_tokens", None),
            "reused": ctx.connection_reused,
            "retries": ctx.retries,
        }
        if error is not None:
            fields["error"] = type(error).__name__
            fields["request_id"] = getattr(error, "request_id", None)
        message = " ".join(f"{key}={value}" for key, value in fields.items())
        if self.settings.log_bodies:
            message += self._bodies(request, result)
        self.log.log(self._level, "llmpool call %s", message, extra={"llmpool": fields})

    def _bodies(self, request: Request | None, result: Any) -> str:
        limit = self.settings.max_body_chars
        parts = []
        if request is not None and request.payload is not None:
            payload = json.dumps(redact(request.payload), ensure_ascii=False, default=str)
            parts.append(f" request={_truncate(payload, limit)!r}")
        if result is not None:
            parts.append(f" response={_truncate(_response_text(result), limit)!r}")
        return "".join(parts)
