"""PluginManager: registration, ordering, dispatch, isolation, the breaker, threads, stats."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from stevedore import ExtensionManager, NamedExtensionManager
from stevedore.extension import Extension

from llmpool.exceptions import ConfigError, PluginError, PluginLoadError, RateLimitExceeded
from llmpool.models import CallContext, ChatCompletion, Request
from llmpool.plugins import LLMPlugin, PluginContext, PluginManager


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ctx() -> CallContext:
    return CallContext(operation="chat", model="m")


def request() -> Request:
    return Request(method="POST", path="/chat/completions", payload={"model": "m"})


def completion(text: str = "hi") -> ChatCompletion:
    return ChatCompletion(id=text, model="m", choices=())


def recorder(name: str, log: list[str], priority: int = 100) -> LLMPlugin:
    """A plugin that appends "<name>:<hook>" to *log* from every hook."""

    class Recorder(LLMPlugin):
        def before_request(self, ctx: CallContext, request: Request) -> None:
            log.append(f"{self.name}:before_request")

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            log.append(f"{self.name}:on_attempt")

        def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
            log.append(f"{self.name}:on_retry")

        def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
            log.append(f"{self.name}:after_response")

        def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
            log.append(f"{self.name}:on_error")

        def on_stream_chunk(self, ctx: CallContext, chunk: Any) -> None:
            log.append(f"{self.name}:on_stream_chunk")

        def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
            log.append(f"{self.name}:on_stream_end")

        def on_memory_pressure(self, level: object, report: object) -> None:
            log.append(f"{self.name}:on_memory_pressure")

    Recorder.name = name
    Recorder.priority = priority
    return Recorder()


class Failing(LLMPlugin):
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        self.calls += 1
        raise RuntimeError("boom")


class Succeeding(LLMPlugin):
    name = "fine"

    def __init__(self) -> None:
        self.calls = 0

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        self.calls += 1


# --------------------------------------------------------------------------- registry


def test_register_class_or_instance_and_look_up() -> None:
    """A class is instantiated, an instance kept; get, in and len see both."""
    manager = PluginManager()
    instance = Succeeding()
    assert manager.register_plugin(instance) is instance
    registered = manager.register_plugin(Failing)
    assert isinstance(registered, Failing)
    assert manager.get("fine") is instance and manager.get("nope") is None
    assert "failing" in manager and len(manager) == 2


def test_order_is_priority_then_name_in_every_hook() -> None:
    """Hooks run by ascending priority, ties broken by name, in every hook."""
    log: list[str] = []
    manager = PluginManager()
    for name, priority in (("zeta", 10), ("beta", 50), ("alpha", 50), ("first", 1)):
        manager.register_plugin(recorder(name, log, priority))
    assert [p.name for p in manager.plugins] == ["first", "zeta", "alpha", "beta"]
    call = ctx()
    manager.on_attempt(call, 1)
    manager.on_stream_end(call, object())
    assert log == [
        "first:on_attempt",
        "zeta:on_attempt",
        "alpha:on_attempt",
        "beta:on_attempt",
        "first:on_stream_end",
        "zeta:on_stream_end",
        "alpha:on_stream_end",
        "beta:on_stream_end",
    ]


def test_every_dispatch_method_reaches_its_hook() -> None:
    """Each of the eight dispatch methods calls the plugin hook of the same name."""
    log: list[str] = []
    manager = PluginManager()
    manager.register_plugin(recorder("r", log))
    call, req = ctx(), request()
    manager.before_request(call, req)
    manager.on_attempt(call, 1)
    manager.on_retry(call, 1, RuntimeError("x"), 0.5)
    manager.after_response(call, req, completion())
    manager.on_error(call, req, RuntimeError("x"))
    manager.on_stream_chunk(call, object())
    manager.on_stream_end(call, object())
    manager.on_memory_pressure("critical", object())
    assert log == [
        "r:before_request",
        "r:on_attempt",
        "r:on_retry",
        "r:after_response",
        "r:on_error",
        "r:on_stream_chunk",
        "r:on_stream_end",
        "r:on_memory_pressure",
    ]


def test_has_tells_whether_any_plugin_implements_a_hook() -> None:
    """has() is False for hooks nobody implements and follows (un)registration."""
    manager = PluginManager()
    assert not manager.has("on_attempt")
    manager.register_plugin(Succeeding)
    assert manager.has("on_attempt") and not manager.has("on_stream_chunk")
    assert manager.unregister_plugin("fine") is True
    assert not manager.has("on_attempt")
    assert manager.unregister_plugin("fine") is False


def test_empty_manager_passes_values_through() -> None:
    """Without plugins, before_request returns the request and after_response the result."""
    manager = PluginManager()
    req, result = request(), completion()
    assert manager.before_request(ctx(), req) is req
    assert manager.after_response(ctx(), req, result) is result


def test_setup_receives_settings_logger_and_client_name() -> None:
    """setup() gets the plugin's settings, its logger and the client's name."""
    seen: list[PluginContext] = []

    class Configured(LLMPlugin):
        name = "configured"

        def setup(self, context: PluginContext) -> None:
            seen.append(context)

    PluginManager(client_name="svc").register_plugin(Configured, {"level": 3})
    (context,) = seen
    assert context.settings == {"level": 3}
    assert context.logger.name == "llmpool.plugins.configured"
    assert context.client_name == "svc"


def test_setup_failure_is_a_recorded_load_failure() -> None:
    """A plugin whose setup raises is not registered; the reason is recorded."""

    class Broken(LLMPlugin):
        name = "broken"

        def setup(self, context: PluginContext) -> None:
            raise ValueError("missing setting")

    manager = PluginManager()
    assert manager.register_plugin(Broken) is None
    assert "broken" not in manager
    (failure,) = manager.load_failures
    assert failure.name == "broken" and "missing setting" in failure.reason


def test_system_exit_in_constructor_does_not_end_the_process() -> None:
    """A plugin calling sys.exit() while instantiated is a load failure."""

    class Exiting(LLMPlugin):
        name = "exiting"

        def __init__(self) -> None:
            raise SystemExit(3)

    manager = PluginManager()
    assert manager.register_plugin(Exiting) is None
    assert "SystemExit" in manager.load_failures[0].reason


def test_not_a_plugin_is_refused() -> None:
    """Objects that are not LLMPlugins raise PluginLoadError and are recorded as load failures."""
    manager = PluginManager()
    with pytest.raises(PluginLoadError, match="not an LLMPlugin subclass"):
        manager.register_plugin(object)  # type: ignore[arg-type]
    with pytest.raises(PluginLoadError, match="42 is not an LLMPlugin"):
        manager.register_plugin(42)  # type: ignore[arg-type]
    assert len(manager.load_failures) == 2


def test_same_name_twice_is_an_error_never_an_override() -> None:
    """A second plugin with a registered name is refused and the first one kept."""
    manager = PluginManager()
    first = manager.register_plugin(Succeeding)

    class Other(Succeeding):
        pass

    assert manager.register_plugin(Other, source="directory:/x/fine.py") is None
    assert manager.get("fine") is first
    (failure,) = manager.load_failures
    assert "explicit" in failure.reason and "directory:/x/fine.py" in failure.reason


def test_name_clash_between_sources_raises_in_strict_mode() -> None:
    """In strict mode a clash between an entry point and an explicit plugin raises."""
    manager = PluginManager(strict=True)
    manager.register_plugin(Succeeding)
    extensions = ExtensionManager.make_test_instance(
        [Extension("fine", None, Succeeding, None)], namespace="llmpool.plugins"
    )
    with pytest.raises(PluginLoadError) as info:
        manager.load_extensions(extensions)
    assert info.value.plugin == "fine"
    assert info.value.source == "entry_point:llmpool.plugins"
    assert "clashes" in info.value.reason


def test_entry_point_name_must_match_plugin_name() -> None:
    """An entry point whose name differs from the plugin's own name is refused."""
    extensions = ExtensionManager.make_test_instance([Extension("other", None, Succeeding, None)])
    manager = PluginManager.from_extension_manager(extensions)
    assert len(manager) == 0
    assert "must match" in manager.load_failures[0].reason


def test_nameless_plugin_takes_its_entry_point_name() -> None:
    """A plugin that does not name itself is registered under its entry point's name."""

    class Anonymous(LLMPlugin):
        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            pass

    extensions = ExtensionManager.make_test_instance([Extension("anon", None, Anonymous, None)])
    manager = PluginManager.from_extension_manager(extensions)
    plugin = manager.get("anon")
    assert isinstance(plugin, Anonymous) and plugin.name == "anon"


def test_make_test_instance_loads_with_settings_and_options() -> None:
    """A NamedExtensionManager test instance feeds the manager, settings by name."""
    seen: dict[str, Any] = {}

    class Configured(LLMPlugin):
        name = "configured"

        def setup(self, context: PluginContext) -> None:
            seen.update(context.settings)

    extensions = NamedExtensionManager.make_test_instance(
        [
            Extension("configured", None, Configured, None),
            Extension("fine", None, Succeeding, Succeeding()),
        ]
    )
    manager = PluginManager.from_extension_manager(
        extensions, settings={"configured": {"x": 1}}, failure_threshold=2
    )
    assert [p.name for p in manager.plugins] == ["configured", "fine"]
    assert seen == {"x": 1}
    assert manager.stats()["plugins"]["fine"]["source"] == "entry_point:TESTING"


def test_constructor_validates_its_arguments() -> None:
    """A zero threshold or a negative cooldown is a ConfigError."""
    with pytest.raises(ConfigError):
        PluginManager(failure_threshold=0)
    with pytest.raises(ConfigError):
        PluginManager(cooldown=-1)


# --------------------------------------------------------------------------- before/after


def test_before_request_threads_a_changed_request_through() -> None:
    """A returned Request replaces the request for the next plugins and the caller."""

    class AddHeader(LLMPlugin):
        name = "add"
        priority = 1

        def before_request(self, ctx: CallContext, request: Request) -> Request:
            return request.replace(headers={"X-A": "1"})

    seen: list[Request] = []

    class Watch(LLMPlugin):
        name = "watch"

        def before_request(self, ctx: CallContext, request: Request) -> None:
            seen.append(request)

    manager = PluginManager()
    manager.register_plugin(Watch)
    manager.register_plugin(AddHeader)
    result = manager.before_request(ctx(), request())
    assert isinstance(result, Request) and result.headers == {"X-A": "1"}
    assert seen == [result]


def test_first_answer_wins_and_later_before_request_hooks_are_skipped() -> None:
    """A non-Request value answers the call; the rest of before_request is skipped."""
    log: list[str] = []
    answer = completion("cached")

    class Answer(LLMPlugin):
        name = "answer"
        priority = 10

        def before_request(self, ctx: CallContext, request: Request) -> ChatCompletion:
            return answer

    manager = PluginManager()
    manager.register_plugin(recorder("early", log, priority=1))
    manager.register_plugin(Answer)
    manager.register_plugin(recorder("late", log, priority=50))
    call = ctx()
    assert manager.before_request(call, request()) is answer
    assert call.state["answered_by"] == "answer"
    assert log == ["early:before_request"]


def test_after_response_may_replace_the_result() -> None:
    """after_response's non-None return replaces the result; None keeps it."""
    replacement = completion("replaced")

    class Replace(LLMPlugin):
        name = "replace"

        def after_response(self, ctx: CallContext, request: Request, response: Any) -> Any:
            return replacement

    manager = PluginManager()
    manager.register_plugin(recorder("observer", [], priority=1))
    manager.register_plugin(Replace)
    assert manager.after_response(ctx(), request(), completion()) is replacement


# --------------------------------------------------------------------------- isolation


def test_raising_observer_is_isolated_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A failing non-critical plugin does not fail the call; it is counted and logged."""
    manager = PluginManager()
    manager.register_plugin(Failing)
    fine = manager.register_plugin(Succeeding)
    with caplog.at_level(logging.WARNING, logger="llmpool.plugins"):
        manager.on_attempt(ctx(), 1)
    assert isinstance(fine, Succeeding) and fine.calls == 1
    stats = manager.stats()["plugins"]["failing"]
    assert stats["failures"] == 1 and stats["hooks"]["on_attempt"]["failures"] == 1
    (record,) = caplog.records
    assert "failing" in record.getMessage() and "on_attempt" in record.getMessage()


def test_failure_logs_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A plugin failing on every call logs once per interval, then says how many it held back."""
    clock = Clock()
    manager = PluginManager(clock=clock, log_interval=60.0, failure_threshold=1000)
    manager.register_plugin(Failing)
    with caplog.at_level(logging.WARNING, logger="llmpool.plugins"):
        for _ in range(50):
            manager.on_attempt(ctx(), 1)
        clock.advance(61)
        manager.on_attempt(ctx(), 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "49 similar messages suppressed" in messages[1]


def test_critical_plugin_exception_becomes_plugin_error() -> None:
    """A critical plugin's exception fails the call as PluginError from the original."""

    class Critical(LLMPlugin):
        name = "critical"
        critical = True

        def before_request(self, ctx: CallContext, request: Request) -> None:
            raise KeyError("no signature key")

    log: list[str] = []
    manager = PluginManager()
    manager.register_plugin(Critical)
    manager.register_plugin(recorder("after", log, priority=500))
    with pytest.raises(PluginError) as info:
        manager.before_request(ctx(), request())
    assert info.value.plugin == "critical" and info.value.hook == "before_request"
    assert isinstance(info.value.__cause__, KeyError)
    assert log == []
    assert manager.stats()["plugins"]["critical"]["failures"] == 1


def test_critical_plugin_llmpool_error_passes_as_is() -> None:
    """An llmpool error from a critical plugin reaches the caller unchanged."""

    class Limit(LLMPlugin):
        name = "limit"
        critical = True

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            raise RateLimitExceeded("slow down", model="m", waited=0.0)

    manager = PluginManager()
    manager.register_plugin(Limit)
    with pytest.raises(RateLimitExceeded):
        manager.on_attempt(ctx(), 1)
    stats = manager.stats()["plugins"]["limit"]
    assert stats["raised"] == 1 and stats["failures"] == 0


def test_critical_plugin_never_raises_from_ending_hooks() -> None:
    """on_error, on_stream_end and on_memory_pressure isolate even a critical plugin."""

    class Critical(LLMPlugin):
        name = "critical"
        critical = True

        def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
            raise RuntimeError("x")

        def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
            raise RuntimeError("x")

        def on_memory_pressure(self, level: object, report: object) -> None:
            raise RuntimeError("x")

    manager = PluginManager()
    manager.register_plugin(Critical)
    manager.on_error(ctx(), request(), RuntimeError("call failed"))
    manager.on_stream_end(ctx(), object())
    manager.on_memory_pressure("critical", object())
    assert manager.stats()["plugins"]["critical"]["failures"] == 3


class Abort(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


def test_system_exit_from_an_observer_is_isolated_and_counted() -> None:
    """SystemExit (or another BaseException) from a non-critical hook is a counted failure."""

    class Exiting(LLMPlugin):
        name = "exiting"

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            raise SystemExit(3)

        def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
            raise Abort("stop")

    manager = PluginManager()
    manager.register_plugin(Exiting)
    manager.on_attempt(ctx(), 1)
    manager.on_retry(ctx(), 1, RuntimeError("x"), 0.0)
    stats = manager.stats()["plugins"]["exiting"]
    assert stats["failures"] == 2 and stats["hooks"]["on_attempt"]["failures"] == 1


def test_system_exit_from_a_critical_hook_becomes_plugin_error() -> None:
    """A critical plugin's SystemExit fails the call as PluginError, never ends the process."""

    class Exiting(LLMPlugin):
        name = "exiting"
        critical = True

        def before_request(self, ctx: CallContext, request: Request) -> None:
            raise SystemExit("bye")

    manager = PluginManager()
    manager.register_plugin(Exiting)
    with pytest.raises(PluginError) as info:
        manager.before_request(ctx(), request())
    assert isinstance(info.value.__cause__, SystemExit)
    assert "SystemExit" in str(info.value)


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt(), BaseExceptionGroup("g", [ValueError(), KeyboardInterrupt()])],
)
def test_keyboard_interrupt_from_a_hook_propagates(interrupt: BaseException) -> None:
    """Ctrl-C inside a hook (alone or in a group) still interrupts: it is never swallowed."""

    class Interrupted(LLMPlugin):
        name = "interrupted"

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            raise interrupt

    manager = PluginManager()
    manager.register_plugin(Interrupted)
    with pytest.raises(type(interrupt)):
        manager.on_attempt(ctx(), 1)


def test_circuit_breaker_disables_and_reenables_after_cooldown() -> None:
    """After N consecutive failures a plugin is skipped for the cooldown, then retried."""
    clock = Clock()
    manager = PluginManager(failure_threshold=3, cooldown=10.0, clock=clock)
    plugin = manager.register_plugin(Failing)
    assert isinstance(plugin, Failing)
    for _ in range(3):
        manager.on_attempt(ctx(), 1)
    stats = manager.stats()["plugins"]["failing"]
    assert stats["disabled"] is True and stats["times_disabled"] == 1
    assert stats["disabled_for"] == 10.0
    for _ in range(5):
        manager.on_attempt(ctx(), 1)
    assert plugin.calls == 3
    assert manager.stats()["plugins"]["failing"]["skipped"] == 5
    clock.advance(10.0)
    manager.on_attempt(ctx(), 1)  # tried again, fails: half-open -> open at once
    assert plugin.calls == 4
    stats = manager.stats()["plugins"]["failing"]
    assert stats["disabled"] is True and stats["times_disabled"] == 2


def test_circuit_breaker_closes_after_a_success() -> None:
    """A success after the cooldown resets the consecutive failures."""
    clock = Clock()
    manager = PluginManager(failure_threshold=2, cooldown=5.0, clock=clock)

    class Flaky(LLMPlugin):
        name = "flaky"
        fail = True

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            if self.fail:
                raise RuntimeError("flaky")

    plugin = manager.register_plugin(Flaky)
    assert isinstance(plugin, Flaky)
    manager.on_attempt(ctx(), 1)
    manager.on_attempt(ctx(), 1)
    assert manager.stats()["plugins"]["flaky"]["disabled"]
    clock.advance(5.0)
    plugin.fail = False
    manager.on_attempt(ctx(), 1)
    stats = manager.stats()["plugins"]["flaky"]
    assert not stats["disabled"] and stats["consecutive_failures"] == 0


def test_circuit_breaker_never_disables_a_critical_plugin() -> None:
    """A critical plugin keeps running (and failing calls) however often it fails."""

    class Critical(LLMPlugin):
        name = "critical"
        critical = True

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            raise RuntimeError("x")

    manager = PluginManager(failure_threshold=2, clock=Clock())
    manager.register_plugin(Critical)
    for _ in range(5):
        with pytest.raises(PluginError):
            manager.on_attempt(ctx(), 1)
    assert manager.stats()["plugins"]["critical"]["times_disabled"] == 0


# --------------------------------------------------------------------------- lifecycle


def test_unregister_and_close_tear_down_in_reverse_order() -> None:
    """unregister tears one plugin down; close tears the rest down in reverse order, once."""
    torn: list[str] = []

    def make(name: str, priority: int) -> LLMPlugin:
        cls = type(name, (LLMPlugin,), {"name": name, "priority": priority})
        cls.teardown = lambda self: torn.append(self.name)  # type: ignore[method-assign]
        return cls()  # type: ignore[no-any-return]

    manager = PluginManager()
    for name, priority in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        manager.register_plugin(make(name, priority))
    manager.unregister_plugin("b")
    assert torn == ["b"]
    manager.close()
    manager.close()
    assert torn == ["b", "d", "c", "a"]
    assert manager.plugins == () and manager.stats()["closed"] is True
    assert manager.register_plugin(make("e", 1)) is None


def test_teardown_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A plugin failing in teardown does not stop close()."""

    class BadTeardown(LLMPlugin):
        name = "bad"

        def teardown(self) -> None:
            raise RuntimeError("stuck")

    manager = PluginManager()
    manager.register_plugin(BadTeardown)
    with caplog.at_level(logging.WARNING):
        manager.close()
    assert "teardown failed" in caplog.text


def test_strict_mode_raises_setup_failures_with_the_cause() -> None:
    """strict=True raises PluginLoadError chained to the plugin's exception."""

    class Broken(LLMPlugin):
        name = "broken"

        def setup(self, context: PluginContext) -> None:
            raise ValueError("bad")

    with pytest.raises(PluginLoadError) as info:
        PluginManager(strict=True).register_plugin(Broken)
    assert info.value.source == "explicit"
    assert isinstance(info.value.__cause__, ValueError)


def test_load_failures_are_bounded() -> None:
    """Only the most recent 100 load failures are kept."""
    manager = PluginManager()
    for _ in range(150):
        with pytest.raises(PluginLoadError):
            manager.register_plugin(object)  # type: ignore[arg-type]
    assert len(manager.load_failures) == 100


# --------------------------------------------------------------------------- stats


def test_stats_reports_counters_timings_and_own_stats() -> None:
    """stats() is a plain dict with counters, per-hook p50/p99 and the plugin's stats()."""

    class Counting(Succeeding):
        name = "counting"
        version = "2.1"

        def stats(self) -> dict[str, Any]:
            return {"seen": self.calls}

    class BadStats(LLMPlugin):
        name = "badstats"

        def stats(self) -> dict[str, Any]:
            raise RuntimeError("no")

    manager = PluginManager()
    manager.register_plugin(Counting)
    manager.register_plugin(BadStats)
    with pytest.raises(PluginLoadError):
        manager.register_plugin(object)  # type: ignore[arg-type]
    for _ in range(10):
        manager.on_attempt(ctx(), 1)
    stats = manager.stats()
    counting = stats["plugins"]["counting"]
    assert counting["version"] == "2.1" and counting["calls"] == 10
    assert counting["source"] == "explicit" and counting["sha256"] is None
    assert counting["module"] == __name__
    hook = counting["hooks"]["on_attempt"]
    assert hook["calls"] == 10 and 0 <= hook["p50_us"] <= hook["p99_us"]
    assert counting["own"] == {"seen": 10}
    assert "error" in stats["plugins"]["badstats"]["own"]
    assert stats["order"] == ["badstats", "counting"]
    assert len(stats["load_failures"]) == 1


# --------------------------------------------------------------------------- threads


class Serial(LLMPlugin):
    """Records how many threads are inside its hook at once."""

    name = "serial"
    thread_safe = False

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.calls = 0

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        time.sleep(0.0005)
        self.calls += 1
        self.inside -= 1


def test_thread_unsafe_plugin_is_serialised() -> None:
    """thread_safe=False: never two threads inside the plugin at once."""
    manager = PluginManager()
    plugin = manager.register_plugin(Serial)
    assert isinstance(plugin, Serial)

    def work() -> int:
        for _ in range(20):
            manager.on_attempt(ctx(), 1)
        return 20

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(work) for _ in range(8)]
        assert sum(f.result() for f in futures) == 160
    assert plugin.most == 1 and plugin.calls == 160


def test_thread_safe_plugin_runs_concurrently() -> None:
    """thread_safe=True (the default): two threads can be inside a hook together."""
    barrier = threading.Barrier(2, timeout=10)

    class Meet(LLMPlugin):
        name = "meet"

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            barrier.wait()

    manager = PluginManager()
    manager.register_plugin(Meet)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(manager.on_attempt, ctx(), 1) for _ in range(2)]
        for future in futures:
            future.result()
    assert manager.stats()["plugins"]["meet"]["failures"] == 0


class Tally(LLMPlugin):
    """Counts its on_attempt calls under a lock."""

    name = "tally"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        with self.lock:
            self.calls += 1


def test_register_and_unregister_during_concurrent_dispatch() -> None:
    """Dispatch from many threads stays correct while plugins come and go."""
    manager = PluginManager()
    stable = manager.register_plugin(Tally)
    assert isinstance(stable, Tally)
    stop, churning = threading.Event(), threading.Event()
    rounds = 500

    def dispatch() -> int:
        assert churning.wait(10)
        for _ in range(rounds):
            call, req = ctx(), request()
            out = manager.before_request(call, req)
            assert isinstance(out, Request)
            manager.on_attempt(call, 1)
            assert manager.after_response(call, req, "result") == "result"
        return rounds

    def churn(worker: int) -> int:
        changes = 0
        while not stop.is_set():
            name = f"temp{worker}.{changes % 3}"
            manager.register_plugin(recorder(name, [], priority=changes % 7))
            manager.unregister_plugin(name)
            changes += 1
            churning.set()
            time.sleep(0.0001)  # let the dispatchers have the GIL too
        return changes

    with ThreadPoolExecutor(max_workers=8) as pool:
        churners = [pool.submit(churn, worker) for worker in range(2)]
        dispatchers = [pool.submit(dispatch) for _ in range(6)]
        assert sum(f.result() for f in dispatchers) == 6 * rounds
        stop.set()
        assert all(f.result() > 0 for f in churners)
    assert stable.calls == 6 * rounds
    assert [p.name for p in manager.plugins] == ["tally"]
    assert manager.load_failures == ()


def test_after_fork_replaces_locks_and_keeps_dispatching() -> None:
    """The fork handler gives the manager fresh locks; dispatch still serialises."""
    manager = PluginManager()
    plugin = manager.register_plugin(Serial)
    assert isinstance(plugin, Serial)
    old_lock = manager._lock
    manager._after_fork()
    assert manager._lock is not old_lock
    manager.on_attempt(ctx(), 1)
    assert plugin.calls == 1


def test_system_exit_in_teardown_or_stats_is_contained() -> None:
    """A plugin calling sys.exit() in teardown() or stats() does not end the process."""

    class Exiting(LLMPlugin):
        name = "exiting"

        def stats(self) -> dict[str, Any]:
            raise SystemExit(2)

        def teardown(self) -> None:
            raise SystemExit(3)

    manager = PluginManager()
    manager.register_plugin(Exiting())
    assert "SystemExit" in manager.stats()["plugins"]["exiting"]["own"]["error"]
    manager.close()
