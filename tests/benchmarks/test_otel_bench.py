"""Cost of the otel plugin per call: no plugin, the plugin on OpenTelemetry's
no-op providers, and on the SDK with an in-memory span exporter and metric
reader. Run::

    tox -e bench -- tests/benchmarks/test_otel_bench.py

Two groups: ``otel-client`` is a whole ``Client.chat`` (JSON, and a streamed
answer read to the end) against the canned server in its own process, so
the difference between rows is the plugin's work; ``otel-hooks`` calls the
plugin's hooks for one call directly (no client, no network), which is the
same work without the noise of a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import CannedServer

import llmpool
from llmpool.models import CallContext, ChatCompletion, Choice, Message, Request, Usage
from llmpool.plugins.base import PluginContext
from llmpool.plugins.builtin.otel import OtelPlugin

SKIP = "needs OpenTelemetry: pip install 'llmpool[otel]' opentelemetry-sdk"
MESSAGES = [{"role": "user", "content": "hi"}]
SETUPS = ("none", "noop", "sdk-in-memory")


class Sdk:
    """The SDK's providers with an in-memory span exporter and metric reader."""

    def __init__(self) -> None:
        sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason=SKIP)
        export = pytest.importorskip("opentelemetry.sdk.trace.export", reason=SKIP)
        memory = pytest.importorskip(
            "opentelemetry.sdk.trace.export.in_memory_span_exporter", reason=SKIP
        )
        sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics", reason=SKIP)
        metrics_export = pytest.importorskip("opentelemetry.sdk.metrics.export", reason=SKIP)
        self.exporter = memory.InMemorySpanExporter()
        self.tracer_provider = sdk_trace.TracerProvider()
        self.tracer_provider.add_span_processor(export.SimpleSpanProcessor(self.exporter))
        self.meter_provider = sdk_metrics.MeterProvider(
            metric_readers=[metrics_export.InMemoryMetricReader()]
        )
        self.calls = 0

    def cleared(self) -> None:
        """Drop the finished spans now and then, so memory stays flat over the rounds."""
        self.calls += 1
        if self.calls % 1000 == 0:
            self.exporter.clear()


def make_plugin(setup: str) -> tuple[OtelPlugin | None, Sdk | None]:
    """The plugin for *setup* (None for "none") and the SDK when it records."""
    if setup == "none":
        return None, None
    if setup == "noop":
        trace = pytest.importorskip("opentelemetry.trace", reason=SKIP)
        metrics = pytest.importorskip("opentelemetry.metrics", reason=SKIP)
        plugin = OtelPlugin(
            tracer_provider=trace.NoOpTracerProvider(),
            meter_provider=metrics.NoOpMeterProvider(),
        )
        return plugin, None
    sdk = Sdk()
    return OtelPlugin(tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider), sdk


@pytest.fixture(scope="module", params=SETUPS)
def setup_client(
    request: pytest.FixtureRequest, canned_server: CannedServer
) -> Iterator[tuple[str, llmpool.Client, Sdk | None]]:
    """A client against the canned server with the plugin set up as the param says."""
    plugin, sdk = make_plugin(request.param)
    plugins = [plugin] if plugin is not None else None
    pool = llmpool.PoolConfig(max_connections=4, max_keepalive=4)
    with llmpool.Client(
        canned_server.base_url, api_key="k", pool=pool, plugins=plugins, plugins_strict=True
    ) as client:
        yield request.param, client, sdk


def _timed(benchmark: Any, call: Callable[[], str], group: str, name: str) -> str:
    benchmark.group = group
    benchmark.name = name
    return str(benchmark(call))


def test_client_chat(
    benchmark: Any,
    setup_client: tuple[str, llmpool.Client, Sdk | None],
    canned_server: CannedServer,
) -> None:
    """Client.chat (JSON) with no plugin, the plugin on no-op providers, and on the SDK."""
    setup, client, sdk = setup_client

    def call() -> str:
        if sdk is not None:
            sdk.cleared()
        return client.chat("m", MESSAGES).text

    assert _timed(benchmark, call, "otel-client-json", f"chat json {setup}") == canned_server.text
    if sdk is not None:
        assert sdk.exporter.get_finished_spans()[-1].name == "chat m"


def test_client_stream(
    benchmark: Any,
    setup_client: tuple[str, llmpool.Client, Sdk | None],
    canned_server: CannedServer,
) -> None:
    """A streamed Client.chat read to the end (42 events), the same three ways."""
    setup, client, sdk = setup_client

    def call() -> str:
        if sdk is not None:
            sdk.cleared()
        with client.chat("m", MESSAGES, stream=True) as stream:
            return "".join([chunk.delta for chunk in stream])

    text = _timed(benchmark, call, "otel-client-stream", f"chat stream {setup}")
    assert text == canned_server.text
    if sdk is not None:
        span = sdk.exporter.get_finished_spans()[-1]
        assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0


@pytest.mark.parametrize("setup", SETUPS[1:])
def test_hooks_of_one_call(benchmark: Any, setup: str) -> None:
    """The plugin's hooks for one JSON call, called directly: its own work per call."""
    plugin, sdk = make_plugin(setup)
    assert plugin is not None
    plugin.setup(PluginContext(name="otel", logger=logging.getLogger("bench")))
    request = Request(
        method="POST", path="/chat/completions", payload={"model": "m", "messages": MESSAGES}
    )
    result = ChatCompletion(
        id="chatcmpl-1",
        model="m",
        choices=(Choice(index=0, message=Message(role="assistant"), finish_reason="stop"),),
        usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
    )

    def one_call() -> None:
        if sdk is not None:
            sdk.cleared()
        ctx = CallContext(operation="chat", model="m")
        plugin.before_request(ctx, request)
        plugin.on_attempt(ctx, 1)
        ctx.attempt, ctx.connection_reused, ctx.status_code = 1, True, 200
        plugin.after_response(ctx, request, result)

    benchmark.group = "otel-hooks"
    benchmark.name = f"hooks {setup}"
    benchmark(one_call)
    if sdk is not None:
        assert (
            sdk.exporter.get_finished_spans()[-1].attributes["gen_ai.response.id"] == "chatcmpl-1"
        )
