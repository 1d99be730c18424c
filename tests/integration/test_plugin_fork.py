"""After os.fork() the child's plugin manager and built-in plugins have fresh locks."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack

import pytest

from llmpool.models import CallContext, ChatCompletion, Request
from llmpool.plugins import LLMPlugin, PluginManager
from llmpool.plugins.builtin.cache import CachePlugin
from llmpool.plugins.builtin.ratelimit import RateLimitPlugin
from llmpool.plugins.builtin.usage import UsagePlugin

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    # Python 3.12+ warns when a multi-threaded process forks: that is the point here.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

#: Seconds the child may take before it is considered deadlocked.
PATIENCE = 20


class Serial(LLMPlugin):
    name = "serial"
    thread_safe = False

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        pass


class Extra(LLMPlugin):
    name = "extra"


def run_in_child(fn: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            signal.alarm(PATIENCE)  # a deadlock ends the child with SIGALRM
            code = fn()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_locks_held_at_fork_are_fresh_in_the_child() -> None:
    """Every plugin lock is held by another thread at fork; the child still dispatches."""
    manager = PluginManager()
    serial = manager.register_plugin(Serial)
    cache = manager.register_plugin(CachePlugin)
    usage = manager.register_plugin(UsagePlugin)
    limit = manager.register_plugin(RateLimitPlugin, {"requests_per_minute": 100})
    assert None not in (serial, cache, usage, limit)
    record = manager._records["serial"]
    assert record.call_lock is not None
    locks = [manager._lock, record.lock, record.call_lock]
    locks += [cache._lock, usage._lock, limit._lock]  # type: ignore[attr-defined]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            holding.set()
            release.wait(PATIENCE)

    def child() -> int:
        ctx = CallContext(operation="chat", model="m")
        request = Request(method="POST", path="/c", payload={"temperature": 0})
        manager.before_request(ctx, request)
        manager.on_attempt(ctx, 1)
        manager.after_response(ctx, request, ChatCompletion(id="x", model="m", choices=()))
        manager.register_plugin(Extra)
        return 0 if manager.stats()["plugins"]["serial"]["calls"] == 1 else 1

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(PATIENCE)
        assert run_in_child(child) == 0
    finally:
        release.set()
        holder.join(PATIENCE)
    manager.on_attempt(CallContext(operation="chat"), 1)  # the parent's locks were released
    assert "extra" not in manager
