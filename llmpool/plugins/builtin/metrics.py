"""The ``metrics`` plugin: Prometheus counters and latency histograms.

prometheus-client is imported in :meth:`MetricsPlugin.setup`, not at import,
so that listing plugins never needs it; without it the plugin fails to load
with a message naming the ``llmpool[metrics]`` extra.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import attrs

from llmpool.exceptions import ConfigError, PluginLoadError
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.validators import optional_str, positive_int

__all__ = ["MetricsPlugin", "MetricsSettings"]

#: Latency buckets in seconds: LLM calls take from milliseconds to minutes.
DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: The model label given to models beyond max_models, to bound cardinality.
OTHER_MODEL = "other"


def _buckets(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok or list(value) != sorted(value):
        raise ConfigError(
            f"{attribute.name} must be an ascending list of positive numbers, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """The ``metrics`` plugin's settings. Immutable."""

    #: A prometheus_client CollectorRegistry, "default" for prometheus_client's
    #: global REGISTRY, or None for a private one (``plugin.registry``).
    registry: Any = None
    #: The metric name prefix.
    namespace: str = attrs.field(default="llmpool", validator=optional_str)
    #: Latency histogram buckets, in seconds.
    buckets: tuple[float, ...] = attrs.field(
        default=DEFAULT_BUCKETS, converter=tuple, validator=_buckets
    )
    #: Distinct model labels; further models are counted as "other".
    max_models: int = attrs.field(default=100, validator=positive_int)


class MetricsPlugin(LLMPlugin):
    """Records Prometheus metrics for every call.

    Metrics (with the default namespace): ``llmpool_requests_total{model,
    operation, outcome}`` (outcome: ok, cached, error),
    ``llmpool_errors_total{model, operation, error}``,
    ``llmpool_retries_total{model, operation}``, ``llmpool_tokens_total{model,
    kind}`` (kind: prompt, completion) and
    ``llmpool_request_duration_seconds{model, operation}``.

    Thread-safe: prometheus-client's metrics are; the set of model labels
    has its own lock.
    """

    name = "metrics"
    version = "1.0"
    priority = 900

    registry: Any
    requests: Any
    errors: Any
    retries: Any
    tokens: Any
    latency: Any

    def __init__(self) -> None:
        self.settings = MetricsSettings()
        self.registry = None
        # Guards _models (the model labels in use).
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._models: set[str] = set()
        self._owned_registry = False

    def setup(self, context: PluginContext) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise PluginLoadError(
                "the metrics plugin needs prometheus-client: pip install 'llmpool[metrics]'",
                plugin=self.name,
                source="setup",
                reason=str(exc),
            ) from exc
        self.settings = read_settings(MetricsSettings, self.name, context.settings)
        given = self.settings.registry
        self._owned_registry = given is None
        if given is None:
            self.registry = prometheus_client.CollectorRegistry()
        elif given == "default":
            self.registry = prometheus_client.REGISTRY
        elif isinstance(given, str):
            raise ConfigError(
                f"plugin 'metrics': registry must be 'default' or a CollectorRegistry, "
                f"got {given!r}",
                key="plugins.metrics.registry",
                value=given,
            )
        else:
            self.registry = given
        self._create(prometheus_client, self.settings.namespace)

    def _create(self, prom: Any, namespace: str) -> None:
        common = {"namespace": namespace, "registry": self.registry}
        self.requests = prom.Counter(
            "requests", "LLM calls", ["model", "operation", "outcome"], **common
        )
        self.errors = prom.Counter(
            "errors", "Failed LLM calls by error", ["model", "operation", "error"], **common
        )
        self.retries = prom.Counter("retries", "Retried attempts", ["model", "operation"], **common)
        self.tokens = prom.Counter("tokens", "Tokens used", ["model", "kind"], **common)
        self.latency = prom.Histogram(
            "request_duration_seconds",
            "LLM call latency, retries included",
            ["model", "operation"],
            buckets=self.settings.buckets,
            **common,
        )

    def teardown(self) -> None:
        if self.registry is None or self._owned_registry:
            return
        for collector in (self.requests, self.errors, self.retries, self.tokens, self.latency):
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)

    def _model(self, ctx: CallContext, result: Any = None) -> str:
        model = ctx.model or getattr(result, "model", None) or ""
        if model in self._models:
            return model
        with self._lock:
            if len(self._models) < self.settings.max_models:
                self._models.add(model)
                return model
        return OTHER_MODEL

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if response is None or request.stream:
            return
        outcome = "cached" if ctx.state.get("answered_by") else "ok"
        self._finish(ctx, outcome, getattr(response, "usage", None), response)

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        self._finish(ctx, "ok", getattr(stream, "usage", None), None)

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        model = self._model(ctx)
        self.errors.labels(model, ctx.operation, type(error).__name__).inc()
        self._finish(ctx, "error", None, None)

    def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
        self.retries.labels(self._model(ctx), ctx.operation).inc()

    def _finish(self, ctx: CallContext, outcome: str, usage: Any, result: Any) -> None:
        if ctx.state.get(self.name):
            return  # a call is counted once, even when a stream also fails
        ctx.state[self.name] = True
        model = self._model(ctx, result)
        self.requests.labels(model, ctx.operation, outcome).inc()
        self.latency.labels(model, ctx.operation).observe(ctx.elapsed)
        if usage is not None and outcome != "cached":
            self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(model, "completion").inc(usage.completion_tokens)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"models": len(self._models), "max_models": self.settings.max_models}
