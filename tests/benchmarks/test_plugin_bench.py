"""Hook dispatch cost with 0, 1 and 5 no-op plugins (target: <= 2 us per plugin per hook).

Run: ``tox -e bench -- tests/benchmarks -k plugin`` or
``pytest tests/benchmarks/test_plugin_bench.py --benchmark-only``.
The per-plugin cost is (time with 5 plugins - time with 0) / 5.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmpool.models import CallContext, ChatCompletion, Request
from llmpool.plugins import LLMPlugin, PluginManager


class NoOp(LLMPlugin):
    """Implements three hooks and does nothing in them."""

    def before_request(self, ctx: CallContext, request: Request) -> None:
        return None

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        pass

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        return None


def manager_with(count: int, *, thread_safe: bool = True) -> PluginManager:
    manager = PluginManager(strict=True)
    for i in range(count):
        cls = type(f"NoOp{i}", (NoOp,), {"name": f"noop{i}", "thread_safe": thread_safe})
        manager.register_plugin(cls)
    return manager


CTX = CallContext(operation="chat", model="m")
REQUEST = Request(method="POST", path="/chat/completions", payload={"model": "m"})
RESULT = ChatCompletion(id="x", model="m", choices=())


@pytest.mark.parametrize("plugins", [0, 1, 5])
def test_bench_on_attempt(benchmark: Any, plugins: int) -> None:
    """on_attempt dispatch (a notification hook)."""
    manager = manager_with(plugins)
    benchmark(manager.on_attempt, CTX, 1)
    assert manager.stats()["plugins"].get("noop0", {"calls": 1})["calls"] >= 1


@pytest.mark.parametrize("plugins", [0, 1, 5])
def test_bench_before_request(benchmark: Any, plugins: int) -> None:
    """before_request dispatch (threads the request through)."""
    manager = manager_with(plugins)
    assert benchmark(manager.before_request, CTX, REQUEST) is REQUEST


@pytest.mark.parametrize("plugins", [0, 1, 5])
def test_bench_after_response(benchmark: Any, plugins: int) -> None:
    """after_response dispatch (threads the result through)."""
    manager = manager_with(plugins)
    assert benchmark(manager.after_response, CTX, REQUEST, RESULT) is RESULT


def test_bench_on_attempt_serialised(benchmark: Any) -> None:
    """on_attempt into five plugins with thread_safe = False (one lock each)."""
    manager = manager_with(5, thread_safe=False)
    benchmark(manager.on_attempt, CTX, 1)


def test_bench_has(benchmark: Any) -> None:
    """The hot-path check the client makes before dispatching a hook."""
    manager = manager_with(1)
    assert benchmark(manager.has, "on_stream_chunk") is False
