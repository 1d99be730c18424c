"""The otel plugin through a real Client against the mock server, read back with
the OpenTelemetry SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import llmpool
from llmpool.exceptions import BadRequestError, PluginLoadError, StreamInterrupted
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.otel import OtelPlugin
from llmpool.testing import Fault, MockLLMServer

SKIP_REASON = (
    "needs OpenTelemetry: pip install 'llmpool[otel]' opentelemetry-sdk "
    "(the otel extra, plus the SDK for the in-memory exporters)"
)
MESSAGES = [{"role": "user", "content": "Say hello, secret prompt."}]


class Telemetry:
    """A tracer provider and a meter provider that keep what they record in memory."""

    def __init__(self) -> None:
        sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason=SKIP_REASON)
        export = pytest.importorskip("opentelemetry.sdk.trace.export", reason=SKIP_REASON)
        in_memory = pytest.importorskip(
            "opentelemetry.sdk.trace.export.in_memory_span_exporter", reason=SKIP_REASON
        )
        sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics", reason=SKIP_REASON)
        metrics_export = pytest.importorskip("opentelemetry.sdk.metrics.export", reason=SKIP_REASON)
        self.exporter = in_memory.InMemorySpanExporter()
        self.tracer_provider = sdk_trace.TracerProvider()
        self.tracer_provider.add_span_processor(export.SimpleSpanProcessor(self.exporter))
        self.reader = metrics_export.InMemoryMetricReader()
        self.meter_provider = sdk_metrics.MeterProvider(metric_readers=[self.reader])

    def spans(self, kind: str = "CLIENT") -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind.name == kind]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def plugin(self, **settings: Any) -> OtelPlugin:
        return OtelPlugin(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **settings
        )


@pytest.fixture
def telemetry() -> Telemetry:
    """In-memory span and metric exporters (skipped without OpenTelemetry)."""
    return Telemetry()


@pytest.fixture
def sleeps() -> list[float]:
    """The retry waits the client asked for (recorded, not slept)."""
    return []


@pytest.fixture
def make_client(
    mock_server: MockLLMServer, telemetry: Telemetry, sleeps: list[float]
) -> Iterator[Any]:
    """Build clients with the otel plugin against the mock server; closed after the test."""
    clients: list[llmpool.Client] = []

    def make(retry: llmpool.RetryPolicy | None = None, **settings: Any) -> llmpool.Client:
        settings.setdefault("server_url", mock_server.base_url)
        client = llmpool.Client(
            mock_server.base_url,
            api_key="k",
            plugins=[telemetry.plugin(**settings)],
            plugins_strict=True,
            retry=retry,
            sleep=sleeps.append,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def events(span: Any, name: str = "llmpool.attempt") -> list[dict[str, Any]]:
    return [dict(e.attributes) for e in span.events if e.name == name]


def test_plain_call_is_one_client_span_with_the_genai_attributes(
    make_client: Any, telemetry: Telemetry, mock_server: MockLLMServer
) -> None:
    """A chat call is one CLIENT span `chat <model>` with request, response and usage attributes."""
    client = make_client()
    result = client.chat("mock-model", MESSAGES, max_tokens=50, temperature=0.5, top_p=0.9)
    (span,) = telemetry.spans()
    a = span.attributes
    assert span.name == "chat mock-model"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "mock-model"
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"]) == (50, 0.5)
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.response.id"] == result.id
    assert a["gen_ai.response.model"] == result.model
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == result.usage.completion_tokens > 0
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", mock_server.port)
    assert a["llmpool.connection.reused"] is False
    assert "error.type" not in a and span.status.status_code.name == "UNSET"
    assert not any(key.endswith("messages") for key in a)
    assert events(span) == [
        {
            "llmpool.attempt": 1,
            "llmpool.attempt.outcome": "ok",
            "llmpool.attempt.duration": events(span)[0]["llmpool.attempt.duration"],
            "llmpool.connection.reused": False,
            "llmpool.pool.wait": a["llmpool.pool.wait"],
            "http.response.status_code": 200,
        }
    ]
    assert a["llmpool.pool.wait"] >= 0.0


def test_second_call_reports_a_reused_connection(make_client: Any, telemetry: Telemetry) -> None:
    """The pool's view: the first call opens a connection, the second reuses it."""
    client = make_client()
    client.chat("mock-model", MESSAGES)
    client.chat("mock-model", MESSAGES)
    first, second = telemetry.spans()
    assert first.attributes["llmpool.connection.reused"] is False
    assert second.attributes["llmpool.connection.reused"] is True


def test_content_is_recorded_only_when_opted_in(make_client: Any, telemetry: Telemetry) -> None:
    """capture_content adds the prompt and the answer as gen_ai.*.messages JSON."""
    make_client().chat("mock-model", MESSAGES)
    make_client(capture_content=True).chat("mock-model", MESSAGES)
    without, with_content = telemetry.spans()
    assert "gen_ai.input.messages" not in without.attributes
    sent = json.loads(with_content.attributes["gen_ai.input.messages"])
    assert sent == [
        {"role": "user", "parts": [{"type": "text", "content": MESSAGES[0]["content"]}]}
    ]
    (answer,) = json.loads(with_content.attributes["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == "Hello from the mock server."
    assert answer["finish_reason"] == "stop"


def test_retries_are_attempt_events_with_reason_and_wait(
    make_client: Any, telemetry: Telemetry, mock_server: MockLLMServer, sleeps: list[float]
) -> None:
    """Each failed attempt is an event with its error, reason and the wait that followed."""
    mock_server.inject(Fault.status(503), count=2)
    make_client().chat("mock-model", MESSAGES)
    (span,) = telemetry.spans()
    got = events(span)
    assert [e["llmpool.attempt"] for e in got] == [1, 2, 3]
    assert [e["llmpool.attempt.outcome"] for e in got] == ["retry", "retry", "ok"]
    for event, waited in zip(got[:2], sleeps, strict=True):
        assert event["error.type"] == "InternalServerError"
        assert event["http.response.status_code"] == 503
        assert event["llmpool.retry.reason"] == "HTTP 503"
        assert event["llmpool.retry.delay"] == waited
    assert span.attributes["llmpool.retries"] == 2
    assert "error.type" not in span.attributes


def test_failed_call_sets_error_type_on_span_and_duration(
    make_client: Any, telemetry: Telemetry, mock_server: MockLLMServer
) -> None:
    """A call that fails for good ends its span with error.type and an ERROR status."""
    mock_server.inject(Fault.status(400))
    with pytest.raises(BadRequestError):
        make_client().chat("mock-model", MESSAGES)
    (span,) = telemetry.spans()
    assert span.attributes["error.type"] == "BadRequestError"
    assert span.attributes["http.response.status_code"] == 400
    assert span.status.status_code.name == "ERROR"
    assert events(span)[-1]["llmpool.attempt.outcome"] == "error"
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "BadRequestError"
    assert point.count == 1


def test_metrics_follow_the_genai_conventions(
    make_client: Any, telemetry: Telemetry, mock_server: MockLLMServer
) -> None:
    """Duration and token usage histograms carry the conventions' attributes."""
    client = make_client()
    result = client.chat("mock-model", MESSAGES)
    client.chat("mock-model", MESSAGES)
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.count == 2
    assert dict(duration.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "mock-model",
        "gen_ai.response.model": result.model,
        "server.address": "127.0.0.1",
        "server.port": mock_server.port,
    }
    tokens = {
        p.attributes["gen_ai.token.type"]: p for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert tokens["input"].sum == 2 * result.usage.prompt_tokens
    assert tokens["output"].sum == 2 * result.usage.completion_tokens


def test_pool_gauges_read_the_given_stats_callable(
    mock_server: MockLLMServer, telemetry: Telemetry
) -> None:
    """With pool_stats the plugin reports in-use, idle and waiting gauges from the pool."""
    pool = llmpool.ConnectionPool(llmpool.PoolConfig(max_connections=4))
    plugin = telemetry.plugin(pool_stats=pool.get_stats)
    with llmpool.Client(mock_server.base_url, api_key="k", pool=pool, plugins=[plugin]) as client:
        client.chat("mock-model", MESSAGES)
        values = {
            name: telemetry.points(f"llmpool.pool.{name}")[0].value
            for name in ("in_use", "idle", "waiting")
        }
    pool.close()
    assert values == {"in_use": 0, "idle": 1, "waiting": 0}


def test_no_pool_gauges_without_a_stats_callable(make_client: Any, telemetry: Telemetry) -> None:
    """Without pool_stats no pool gauge is registered (the plugin API gives no pool)."""
    make_client().chat("mock-model", MESSAGES)
    assert telemetry.points("llmpool.pool.in_use") == []
    assert telemetry.points("gen_ai.client.operation.duration")


def test_stream_span_ends_with_the_stream_and_records_first_chunk(
    make_client: Any, telemetry: Telemetry
) -> None:
    """A stream's span ends when the stream does, with time to first chunk and usage."""
    client = make_client()
    with client.chat("mock-model", MESSAGES, stream=True) as stream:
        next(iter(stream))
        assert telemetry.spans() == []  # still open while the stream is
        text = "".join([chunk.delta for chunk in stream])
    (span,) = telemetry.spans()
    a = span.attributes
    assert text and a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["gen_ai.usage.output_tokens"] > 0
    (ttfc,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.count == 1


def test_stream_left_early_ends_its_span_without_error(
    make_client: Any, telemetry: Telemetry
) -> None:
    """A stream the caller leaves after one chunk still ends its span, as a success."""
    with make_client().chat("mock-model", MESSAGES, stream=True) as stream:
        for _ in stream:
            break
    (span,) = telemetry.spans()
    assert "error.type" not in span.attributes
    assert "gen_ai.response.finish_reasons" not in span.attributes


def test_stream_broken_midway_ends_its_span_with_the_error(
    make_client: Any, telemetry: Telemetry
) -> None:
    """A stream whose connection drops mid-answer ends its span once, with error.type."""
    client = make_client()
    received = []
    with pytest.raises(StreamInterrupted):
        with client.chat(
            "mock-model", MESSAGES, stream=True, extra_headers={"X-Mock-Fault": "disconnect=2"}
        ) as stream:
            for chunk in stream:
                received.append(chunk.delta)
    (span,) = telemetry.spans()
    assert len(received) == 2
    assert span.attributes["error.type"] == "StreamInterrupted"
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert events(span)[-1]["llmpool.attempt.outcome"] == "error"
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "StreamInterrupted"


def test_sixteen_threads_keep_each_call_with_its_parent_and_attempts(
    make_client: Any, telemetry: Telemetry, mock_server: MockLLMServer
) -> None:
    """Under 16 threads each call's span has its own thread's parent and its own retries."""
    tracer = telemetry.tracer_provider.get_tracer("test")
    mock_server.inject(Fault.status(503), count=16)
    client = make_client(retry=llmpool.RetryPolicy(max_attempts=20))

    def work(i: int) -> None:
        with tracer.start_as_current_span(f"work-{i}"):
            for _ in range(3):
                client.chat(f"model-{i}", MESSAGES)

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(work, i) for i in range(16)]:
            future.result()
    parents = {s.context.span_id: s.name for s in telemetry.spans("INTERNAL")}
    calls = telemetry.spans()
    assert len(calls) == 48
    faults_by_model: dict[str, int] = {}
    for record in mock_server.requests:
        model = record.json["model"]
        faults_by_model[model] = faults_by_model.get(model, 0) + (record.fault is not None)
    retries_by_model: dict[str, int] = {}
    for span in calls:
        model = span.attributes["gen_ai.request.model"]
        assert parents[span.parent.span_id] == f"work-{model.split('-')[1]}"
        got = events(span)
        assert [e["llmpool.attempt"] for e in got] == list(range(1, len(got) + 1))
        assert [e["llmpool.attempt.outcome"] for e in got[:-1]] == ["retry"] * (len(got) - 1)
        assert span.attributes["llmpool.retries"] == len(got) - 1
        retries_by_model[model] = retries_by_model.get(model, 0) + len(got) - 1
    assert sum(retries_by_model.values()) == 16
    assert retries_by_model == faults_by_model


def test_settings_from_plugin_settings_override_and_unknown_keys_fail(
    mock_server: MockLLMServer, telemetry: Telemetry
) -> None:
    """plugin_settings reach the plugin; a misspelt setting is a load error naming it."""
    with pytest.raises(PluginLoadError, match="capture_contents"):
        llmpool.Client(
            mock_server.base_url,
            plugins=[telemetry.plugin()],
            plugin_settings={"otel": {"capture_contents": True}},
            plugins_strict=True,
        )
    with llmpool.Client(
        mock_server.base_url,
        api_key="k",
        plugins=[telemetry.plugin()],
        plugin_settings={"otel": {"capture_content": True}},
        plugins_strict=True,
    ) as client:
        client.chat("mock-model", MESSAGES)
    (span,) = telemetry.spans()
    assert "gen_ai.input.messages" in span.attributes
    # no server_url given: the address is the call's own base URL
    assert (span.attributes["server.address"], span.attributes["server.port"]) == (
        "127.0.0.1",
        mock_server.port,
    )
    assert span.attributes["llmpool.pool.wait"] >= 0.0


def test_global_providers_are_used_when_none_is_given(
    mock_server: MockLLMServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without providers in settings the plugin takes OpenTelemetry's global ones."""
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: telemetry.tracer_provider)
    monkeypatch.setattr(metrics_internal, "get_meter_provider", lambda: telemetry.meter_provider)
    with llmpool.Client(
        mock_server.base_url, api_key="k", plugins=["otel"], plugins_strict=True
    ) as client:
        client.chat("mock-model", MESSAGES)
    assert [s.name for s in telemetry.spans()] == ["chat mock-model"]
    assert telemetry.points("gen_ai.client.operation.duration")


def test_without_opentelemetry_loading_fails_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without opentelemetry-api the plugin fails to load with `pip install 'llmpool[otel]'`."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(PluginLoadError, match=r"llmpool\[otel\]"):
        PluginManager(strict=True).register_plugin(OtelPlugin)
