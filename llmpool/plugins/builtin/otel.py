"""The ``otel`` plugin: OpenTelemetry traces and metrics with the GenAI conventions.

One CLIENT span per call, named ``{gen_ai.operation.name} {gen_ai.request.model}``
(``chat gpt-4o-mini``), with the ``gen_ai.*`` attributes the openai and
anthropic instrumentations emit, one ``llmpool.attempt`` event per attempt
(a retried one carries its reason and the wait that followed), and the
pool's view of the call (``llmpool.connection.reused``). Metrics:
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and,
for streams, ``gen_ai.client.operation.time_to_first_chunk``; with a
``pool_stats`` callable, gauges of the pool's connections in use, idle and
callers waiting.

opentelemetry-api is imported in :meth:`OtelPlugin.setup`, not at import,
so that listing plugins never needs it; without it the plugin fails to load
with a message naming the ``llmpool[otel]`` extra. Prompt and completion
text are recorded only with ``capture_content: true``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from llmpool._version import __version__
from llmpool.exceptions import LLMPoolError, PluginLoadError
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.plugins.builtin.otel_support import (
    DURATION_BUCKETS,
    MAX_MESSAGE,
    OPERATION_NAMES,
    REQUEST_PARAMS,
    TOKEN_BUCKETS,
    Call,
    OtelSettings,
    error_attributes,
    histogram,
    input_messages,
    retry_reason,
    server_attributes,
)

__all__ = ["OPERATION_NAMES", "OtelPlugin", "OtelSettings"]


class OtelPlugin(LLMPlugin):
    """Traces and metrics of every call through OpenTelemetry.

    ``OtelPlugin(tracer_provider=..., meter_provider=..., **settings)`` gives
    the settings when the instance is passed to ``Client(plugins=[...])``;
    ``plugin_settings={"otel": {...}}`` override them. Without providers the
    global ones are used (so an application that configures OpenTelemetry
    once gets llmpool's spans with no further setting).

    Thread-safe: per-call data lives in the call's context, and
    OpenTelemetry's tracers and instruments are thread-safe.
    """

    name = "otel"
    version = "1.0"
    priority = 950  # after metrics (900), before logging (1000)

    tracer: Any
    duration: Any
    tokens: Any
    first_chunk: Any

    def __init__(
        self, *, tracer_provider: Any = None, meter_provider: Any = None, **settings: Any
    ) -> None:
        self._given: dict[str, Any] = dict(settings)
        if tracer_provider is not None:
            self._given["tracer_provider"] = tracer_provider
        if meter_provider is not None:
            self._given["meter_provider"] = meter_provider
        self.settings = OtelSettings()
        self._server: dict[str, Any] = {}
        self._gauges_on = False
        self._trace: Any = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, context: PluginContext) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:
            raise PluginLoadError(
                "the otel plugin needs opentelemetry-api: pip install 'llmpool[otel]'",
                plugin=self.name,
                source="setup",
                reason=str(exc),
            ) from exc
        self.settings = read_settings(OtelSettings, self.name, {**self._given, **context.settings})
        self._trace = trace
        self._server = server_attributes(self.settings.server_url)
        self.tracer = trace.get_tracer(
            "llmpool", __version__, tracer_provider=self.settings.tracer_provider
        )
        meter = metrics.get_meter(
            "llmpool", __version__, meter_provider=self.settings.meter_provider
        )
        self.duration = histogram(
            meter,
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            DURATION_BUCKETS,
        )
        self.tokens = histogram(
            meter, "gen_ai.client.token.usage", "{token}", "Number of tokens used", TOKEN_BUCKETS
        )
        self.first_chunk = histogram(
            meter,
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
            "Time to the first chunk of a streamed answer",
            DURATION_BUCKETS,
        )
        if self.settings.pool_stats is not None:
            self._register_gauges(meter, metrics.Observation)

    def _register_gauges(self, meter: Any, observation: Any) -> None:
        read = self.settings.pool_stats
        assert read is not None
        self._gauges_on = True

        def gauge(key: str) -> Callable[[Any], list[Any]]:
            def observe(_options: Any) -> list[Any]:
                if not self._gauges_on:
                    return []
                return [observation(int(read().get(key, 0) or 0))]

            return observe

        for key, unit, text in (
            ("in_use", "{connection}", "Pooled connections checked out"),
            ("idle", "{connection}", "Pooled connections idle, ready for reuse"),
            ("waiting", "{request}", "Callers waiting for a free connection"),
        ):
            meter.create_observable_gauge(
                f"llmpool.pool.{key}", callbacks=[gauge(key)], unit=unit, description=text
            )

    def teardown(self) -> None:
        # OpenTelemetry cannot unregister an instrument: the gauges go quiet.
        self._gauges_on = False

    def stats(self) -> dict[str, Any]:
        return {
            "capture_content": self.settings.capture_content,
            "pool_gauges": self._gauges_on,
        }

    # ------------------------------------------------------------------ hooks

    def before_request(self, ctx: CallContext, request: Request) -> None:
        self._call(ctx, request)

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        self._call(ctx, None).attempt_started = time.monotonic()

    def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
        call = self._call(ctx, None)
        event = self._attempt_event(call, attempt, "retry")
        event.update(error_attributes(error))
        event["llmpool.retry.reason"] = retry_reason(error)
        event["llmpool.retry.delay"] = float(delay)
        call.span.add_event("llmpool.attempt", event)

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if request.stream:
            return  # a stream ends in on_stream_end
        call = self._call(ctx, request)
        if call.ended:
            return
        answered_by = ctx.state.get("answered_by")
        if answered_by:
            call.span.set_attribute("llmpool.answered_by", str(answered_by))
        else:
            call.span.add_event("llmpool.attempt", self._final_attempt(ctx, call, "ok"))
        self._response(call, response)
        usage = getattr(response, "usage", None)
        finish = [c.finish_reason for c in getattr(response, "choices", ()) if c.finish_reason]
        if self.settings.capture_content:
            self._output(call, getattr(response, "text", None), finish[0] if finish else None)
        self._end(ctx, call, usage=None if answered_by else usage, finish=finish, error=None)

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        call = self._call(ctx, request)
        if call.ended:
            return  # a stream that broke: on_stream_end already recorded the error
        if ctx.attempt:
            event = self._final_attempt(ctx, call, "error")
            event.update(error_attributes(error))
            call.span.add_event("llmpool.attempt", event)
        self._end(ctx, call, usage=None, finish=(), error=error)

    def on_stream_chunk(self, ctx: CallContext, chunk: Any) -> None:
        call: Call | None = ctx.state.get(self.name)
        if call is None or call.first_chunk is not None:
            return
        call.first_chunk = ctx.elapsed
        raw = getattr(chunk, "raw", None) or {}
        span = call.span
        if isinstance(raw.get("id"), str):
            span.set_attribute("gen_ai.response.id", raw["id"])
        if isinstance(raw.get("model"), str):
            span.set_attribute("gen_ai.response.model", raw["model"])
            call.attrs["gen_ai.response.model"] = raw["model"]

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        call = self._call(ctx, None)
        if call.ended:
            return
        # A broken stream ends while its error is being handled (on_error follows).
        error = sys.exc_info()[1]
        error = error if isinstance(error, LLMPoolError) else None
        span = call.span
        finish_reason = getattr(stream, "finish_reason", None)
        if call.first_chunk is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", call.first_chunk)
            self.first_chunk.record(call.first_chunk, call.attrs)
        request_id = getattr(stream, "request_id", None)
        if request_id:
            span.set_attribute("llmpool.request_id", str(request_id))
        event = self._final_attempt(ctx, call, "error" if error is not None else "ok")
        if error is not None:
            event.update(error_attributes(error))
        span.add_event("llmpool.attempt", event)
        if self.settings.capture_content:
            self._output(call, getattr(stream, "text", None), finish_reason)
        finish = [finish_reason] if finish_reason else []
        usage = getattr(stream, "usage", None)
        self._end(ctx, call, usage=usage, finish=finish, error=error)

    # ------------------------------------------------------------------ the call's span

    def _call(self, ctx: CallContext, request: Request | None) -> Call:
        """The call's telemetry, its span started at the call's start on first use."""
        call: Call | None = ctx.state.get(self.name)
        if call is None:
            call = self._start(ctx, request)
            ctx.state[self.name] = call
        return call

    def _start(self, ctx: CallContext, request: Request | None) -> Call:
        operation = OPERATION_NAMES.get(ctx.operation, ctx.operation)
        model = ctx.model or ""
        common: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": ctx.provider,
            **(self._server or server_attributes(ctx.base_url)),
        }
        if model:
            common["gen_ai.request.model"] = model
        attributes = dict(common)
        attributes["llmpool.call_id"] = ctx.call_id
        payload = request.payload if request is not None else None
        if payload:
            for key, name in REQUEST_PARAMS:
                value = payload.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    attributes[name] = value
            if request is not None and request.stream:
                attributes["gen_ai.request.stream"] = True
            if self.settings.capture_content:
                attributes["gen_ai.input.messages"] = input_messages(payload)
        # The span starts when the call did (plugins before this one included).
        start = time.time_ns() - int((time.monotonic() - ctx.started) * 1e9)
        span = self.tracer.start_span(
            f"{operation} {model}".rstrip(),
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        return Call(span, common)

    def _attempt_event(self, call: Call, attempt: int, outcome: str) -> dict[str, Any]:
        event: dict[str, Any] = {"llmpool.attempt": attempt, "llmpool.attempt.outcome": outcome}
        if call.attempt_started:
            event["llmpool.attempt.duration"] = time.monotonic() - call.attempt_started
        return event

    def _final_attempt(self, ctx: CallContext, call: Call, outcome: str) -> dict[str, Any]:
        event = self._attempt_event(call, ctx.attempt, outcome)
        if ctx.connection_reused is not None:
            event["llmpool.connection.reused"] = ctx.connection_reused
        if ctx.pool_wait is not None:
            event["llmpool.pool.wait"] = ctx.pool_wait
        if ctx.status_code is not None:
            event["http.response.status_code"] = ctx.status_code
        return event

    def _response(self, call: Call, response: Any) -> None:
        span = call.span
        response_id = getattr(response, "id", None)
        if isinstance(response_id, str) and response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        model = getattr(response, "model", None)
        if isinstance(model, str) and model:
            span.set_attribute("gen_ai.response.model", model)
            call.attrs["gen_ai.response.model"] = model
        request_id = getattr(response, "request_id", None)
        if request_id:
            span.set_attribute("llmpool.request_id", str(request_id))

    def _output(self, call: Call, text: str | None, finish_reason: str | None) -> None:
        if text is None:
            return
        message: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}],
        }
        if finish_reason:
            message["finish_reason"] = finish_reason
        call.span.set_attribute("gen_ai.output.messages", json.dumps([message]))

    def _end(
        self,
        ctx: CallContext,
        call: Call,
        *,
        usage: Any,
        finish: Any,
        error: BaseException | None,
    ) -> None:
        call.ended = True
        span = call.span
        span.set_attribute("llmpool.retries", ctx.retries)
        if ctx.connection_reused is not None:
            span.set_attribute("llmpool.connection.reused", ctx.connection_reused)
        if ctx.pool_wait is not None:
            span.set_attribute("llmpool.pool.wait", ctx.pool_wait)
        if finish:
            span.set_attribute("gen_ai.response.finish_reasons", tuple(finish))
        attributes = call.attrs
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            self.tokens.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.tokens.record(
                usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"}
            )
        if error is not None:
            kind = type(error).__name__
            attributes = {**attributes, "error.type": kind}
            span.set_attribute("error.type", kind)
            status = getattr(error, "status_code", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            span.set_status(self._trace.StatusCode.ERROR, str(error)[:MAX_MESSAGE])
        self.duration.record(ctx.elapsed, attributes)
        span.end()
