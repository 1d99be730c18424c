"""The built-in metrics plugin: Prometheus counters and histograms in a private registry.

prometheus-client comes with the ``metrics`` extra, not the ``test`` one: without
it this module skips (tox installs both extras, so it runs there).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from llmpool.exceptions import PluginLoadError, ReadTimeout
from llmpool.models import CallContext, ChatCompletion, Request, Usage
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.metrics import MetricsPlugin

prometheus_client = pytest.importorskip(
    "prometheus_client",
    reason="prometheus-client is not installed: pip install 'llmpool[metrics]'",
)


def load(settings: dict[str, Any] | None = None) -> tuple[PluginManager, MetricsPlugin]:
    manager = PluginManager(strict=True)
    plugin = manager.register_plugin(MetricsPlugin, settings)
    assert isinstance(plugin, MetricsPlugin)
    return manager, plugin


def run_call(manager: PluginManager, model: str = "m", tokens: tuple[int, int] = (3, 4)) -> None:
    ctx = CallContext(operation="chat", model=model)
    request = Request(method="POST", path="/chat/completions", payload={})
    usage = Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1], total_tokens=sum(tokens))
    manager.after_response(
        ctx, request, ChatCompletion(id="x", model=model, choices=(), usage=usage)
    )


def sample(plugin: MetricsPlugin, name: str, **labels: str) -> float | None:
    value = plugin.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_counts_requests_tokens_and_latency() -> None:
    """A successful call counts one request, its tokens and one latency observation."""
    manager, plugin = load()
    run_call(manager)
    run_call(manager)
    labels = {"model": "m", "operation": "chat"}
    assert sample(plugin, "llmpool_requests_total", outcome="ok", **labels) == 2
    assert sample(plugin, "llmpool_tokens_total", model="m", kind="prompt") == 6
    assert sample(plugin, "llmpool_tokens_total", model="m", kind="completion") == 8
    assert sample(plugin, "llmpool_request_duration_seconds_count", **labels) == 2


def test_counts_errors_and_retries() -> None:
    """Failures are counted by error class; retries by model and operation."""
    manager, plugin = load()
    ctx = CallContext(operation="embed", model="e")
    request = Request(method="POST", path="/embeddings", payload={})
    manager.on_retry(ctx, 1, ReadTimeout("slow"), 0.5)
    manager.on_error(ctx, request, ReadTimeout("slow"))
    labels = {"model": "e", "operation": "embed"}
    assert sample(plugin, "llmpool_retries_total", **labels) == 1
    assert sample(plugin, "llmpool_errors_total", error="ReadTimeout", **labels) == 1
    assert sample(plugin, "llmpool_requests_total", outcome="error", **labels) == 1


def test_two_plugins_have_private_registries() -> None:
    """Two clients' metrics plugins do not clash: each has its own registry by default."""
    (m1, p1), (_m2, p2) = load(), load()
    run_call(m1)
    assert p1.registry is not p2.registry
    assert sample(p2, "llmpool_requests_total", model="m", operation="chat", outcome="ok") is None
    assert p1.registry is not prometheus_client.REGISTRY


def test_given_registry_is_used_and_released_on_teardown() -> None:
    """A registry from the settings receives the metrics; teardown unregisters them."""
    registry = prometheus_client.CollectorRegistry()
    manager, _ = load({"registry": registry, "namespace": "app"})
    run_call(manager)
    assert registry.get_sample_value(
        "app_requests_total", {"model": "m", "operation": "chat", "outcome": "ok"}
    )
    manager.close()
    load({"registry": registry, "namespace": "app"})  # no "Duplicated timeseries"


def test_model_labels_are_bounded() -> None:
    """Models beyond max_models are counted under the label "other"."""
    manager, plugin = load({"max_models": 2})
    for model in ("a", "b", "c", "d"):
        run_call(manager, model=model)
    other = sample(plugin, "llmpool_requests_total", model="other", operation="chat", outcome="ok")
    assert other == 2
    assert plugin.stats() == {"models": 2, "max_models": 2}


def test_cached_answers_count_no_tokens() -> None:
    """A call answered from the cache is counted as cached, without tokens."""
    manager, plugin = load()
    ctx = CallContext(operation="chat", model="m")
    ctx.state["answered_by"] = "cache"
    usage = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    manager.after_response(
        ctx,
        Request(method="POST", path="/x", payload={}),
        ChatCompletion(id="x", model="m", choices=(), usage=usage),
    )
    assert sample(plugin, "llmpool_requests_total", model="m", operation="chat", outcome="cached")
    assert sample(plugin, "llmpool_tokens_total", model="m", kind="prompt") is None


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client the plugin fails to load, naming llmpool[metrics]."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    manager = PluginManager()
    assert manager.register_plugin(MetricsPlugin) is None
    assert "llmpool[metrics]" in manager.load_failures[0].reason
    with pytest.raises(PluginLoadError, match=r"llmpool\[metrics\]"):
        PluginManager(strict=True).register_plugin(MetricsPlugin)


def test_bad_buckets_are_a_load_failure() -> None:
    """Histogram buckets must be ascending positive numbers."""
    manager = PluginManager()
    assert manager.register_plugin(MetricsPlugin, {"buckets": [5, 1]}) is None
    assert "buckets" in manager.load_failures[0].reason


def test_default_registry_by_name_and_unknown_names_refused() -> None:
    """registry: "default" uses prometheus_client's global REGISTRY; other strings fail."""
    manager, plugin = load({"registry": "default", "namespace": "llmpool_unit_test"})
    assert plugin.registry is prometheus_client.REGISTRY
    manager.close()  # unregisters from the global registry, so loading again works
    again, _ = load({"registry": "default", "namespace": "llmpool_unit_test"})
    again.close()
    failing = PluginManager()
    assert failing.register_plugin(MetricsPlugin, {"registry": "global"}) is None
    assert "registry" in failing.load_failures[0].reason
