"""The built-in usage plugin: tokens and cost per model, exact under threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmpool.models import CallContext, ChatCompletion, Request, Usage
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.usage import UsagePlugin

REQUEST = Request(method="POST", path="/chat/completions", payload={})


def load(settings: dict[str, Any] | None = None) -> tuple[PluginManager, UsagePlugin]:
    manager = PluginManager(strict=True)
    plugin = manager.register_plugin(UsagePlugin, settings)
    assert isinstance(plugin, UsagePlugin)
    return manager, plugin


def run(manager: PluginManager, model: str, prompt: int, completion: int) -> None:
    usage = Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    ctx = CallContext(operation="chat", model=model)
    manager.after_response(
        ctx, REQUEST, ChatCompletion(id="x", model=model, choices=(), usage=usage)
    )


def test_totals_per_model_and_overall() -> None:
    """Tokens add up per model and overall; without prices cost is None."""
    manager, plugin = load()
    run(manager, "a", 10, 5)
    run(manager, "a", 1, 1)
    run(manager, "b", 100, 0)
    totals = plugin.totals()
    assert totals["calls"] == 3 and totals["total_tokens"] == 117
    assert totals["models"]["a"] == {
        "calls": 2,
        "cached_calls": 0,
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "cost": None,
    }
    assert totals["cost"] is None


def test_cost_from_prices_per_million_and_default() -> None:
    """Prices per million tokens, with aliases and a "*" default; unpriced models cost None."""
    manager, plugin = load(
        {"prices": {"a": {"input": 1.0, "output": 2.0}, "*": {"prompt": 10.0, "completion": 0}}}
    )
    run(manager, "a", 1_000_000, 500_000)
    run(manager, "z", 100_000, 100_000)
    totals = plugin.totals()
    assert totals["models"]["a"]["cost"] == pytest.approx(2.0)
    assert totals["models"]["z"]["cost"] == pytest.approx(1.0)
    assert totals["cost"] == pytest.approx(3.0)


def test_cost_per_thousand_tokens() -> None:
    """per_tokens: 1000 prices per 1K tokens."""
    manager, plugin = load({"per_tokens": 1000, "prices": {"a": {"prompt": 0.5}}})
    run(manager, "a", 2000, 0)
    assert plugin.totals()["cost"] == pytest.approx(1.0)


def test_cached_answers_and_streams() -> None:
    """Cache answers count as cached calls without tokens; stream usage is counted."""
    manager, plugin = load({"prices": {"*": {"prompt": 1, "completion": 1}}})
    ctx = CallContext(operation="chat", model="a")
    ctx.state["answered_by"] = "cache"
    usage = Usage(prompt_tokens=5, completion_tokens=5, total_tokens=10)
    manager.after_response(ctx, REQUEST, ChatCompletion(id="x", model="a", choices=(), usage=usage))

    class Stream:
        usage = Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)

    manager.on_stream_end(CallContext(operation="chat", model="a"), Stream())
    manager.after_response(
        CallContext(operation="chat", model="a"), REQUEST.replace(stream=True), None
    )
    a = plugin.totals()["models"]["a"]
    assert a["calls"] == 2 and a["cached_calls"] == 1 and a["total_tokens"] == 5


def test_totals_are_exact_under_threads() -> None:
    """Eight threads accounting at once lose no update."""
    manager, plugin = load()

    def work(worker: int) -> int:
        for _ in range(250):
            run(manager, f"m{worker % 2}", 3, 4)
        return 250

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(f.result() for f in [pool.submit(work, w) for w in range(8)]) == 2000
    totals = plugin.totals()
    assert totals["calls"] == 2000 and totals["total_tokens"] == 14_000
    assert totals["models"]["m0"]["calls"] == 1000


def test_models_are_bounded_and_reset_forgets() -> None:
    """Models beyond max_models are counted as "other"; reset() clears everything."""
    manager, plugin = load({"max_models": 2})
    for model in ("a", "b", "c", "d"):
        run(manager, model, 1, 0)
    assert set(plugin.totals()["models"]) == {"a", "b", "other"}
    assert plugin.totals()["models"]["other"]["calls"] == 2
    plugin.reset()
    assert plugin.totals()["calls"] == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"prices": {"a": {"prompt": -1}}},
        {"prices": {"a": {"cheap": 1}}},
        {"prices": ["a"]},
        {"per_tokens": 500},
    ],
)
def test_bad_prices_are_load_failures(settings: dict[str, Any]) -> None:
    """Negative prices, unknown price keys and odd units are refused."""
    manager = PluginManager()
    assert manager.register_plugin(UsagePlugin, settings) is None
    assert manager.load_failures[0].name == "usage"
