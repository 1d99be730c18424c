"""Hook dispatch over an immutable snapshot, with isolation and the circuit breaker.

A snapshot is a dict from hook name to a tuple of :class:`Entry` (one per
plugin implementing the hook, in priority-then-name order). It is built by
the manager under its lock and never mutated afterwards, so dispatching
takes no lock except a non-thread-safe plugin's own.

Isolation covers every exception a hook raises, ``SystemExit`` and other
``BaseException`` subclasses included (a plugin that calls ``sys.exit()``
must not end a worker's call, let alone the worker); only
``KeyboardInterrupt`` passes through, so Ctrl-C still interrupts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from llmpool.exceptions import LLMPoolError, PluginError
from llmpool.models import CallContext, Request
from llmpool.plugins.base import HOOKS, RAISING_HOOKS
from llmpool.plugins.loading import describe_error
from llmpool.plugins.stats import HookStats, PluginRecord
from llmpool.plugins.validation import overridden_hooks

__all__ = ["EMPTY_SNAPSHOT", "Entry", "HookDispatcher", "Snapshot", "build_snapshot"]

log = logging.getLogger(__name__)

_perf = time.perf_counter

#: What _call returns for a hook that failed or was skipped by the breaker.
_SKIPPED: Any = object()


class Entry:
    """One plugin's hook in a snapshot: what to call and where to count it."""

    __slots__ = ("call", "name", "raises", "record", "stats")

    def __init__(self, record: PluginRecord, hook: str) -> None:
        method = getattr(record.plugin, hook)
        lock = record.call_lock
        self.call: Callable[..., Any] = method if lock is None else _serialised(method, lock)
        self.name = record.name
        self.record = record
        self.stats: HookStats = record.hooks[hook]
        self.raises = record.plugin.critical and hook in RAISING_HOOKS


def _serialised(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        with lock:
            return method(*args)

    return call


#: Hook name -> the entries implementing it, in order.
Snapshot = dict[str, tuple[Entry, ...]]

EMPTY_SNAPSHOT: Snapshot = dict.fromkeys(HOOKS, ())


def build_snapshot(records: Iterable[PluginRecord]) -> Snapshot:
    """The snapshot of *records* (already in dispatch order)."""
    hooks: dict[str, list[Entry]] = {hook: [] for hook in HOOKS}
    for record in records:
        for hook in overridden_hooks(record.plugin):
            hooks[hook].append(Entry(record, hook))
    return {hook: tuple(entries) for hook, entries in hooks.items()}


class HookDispatcher:
    """The dispatch half of :class:`~llmpool.PluginManager`: one
    method per hook, run over the published snapshot ``_hooks``.

    Thread safety: every method may be called from any thread at once.
    Isolation: a hook's exception (``SystemExit`` included, any
    ``BaseException`` but ``KeyboardInterrupt``) is counted and logged; a
    critical plugin's becomes :class:`~llmpool.exceptions.PluginError`.
    """

    _hooks: Snapshot
    _clock: Callable[[], float]
    _threshold: int
    _cooldown: float
    _log_interval: float

    def has(self, hook: str) -> bool:
        """Whether any registered plugin implements *hook* (cheap; for the hot path)."""
        return bool(self._hooks[hook])

    def before_request(self, ctx: CallContext, request: Request) -> object:
        """Run ``before_request``: returns the (possibly changed) Request, or an
        answer (any other value) that ends the call without the network. The
        answering plugin's name is put in ``ctx.state["answered_by"]``.
        """
        for entry in self._hooks["before_request"]:
            result = self._call(entry, "before_request", (ctx, request))
            if result is None or result is _SKIPPED:
                continue
            if isinstance(result, Request):
                request = result
                continue
            ctx.state["answered_by"] = entry.name
            return result
        return request

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> Any:
        """Run ``after_response``; returns the result, as replaced by plugins."""
        for entry in self._hooks["after_response"]:
            result = self._call(entry, "after_response", (ctx, request, response))
            if result is not None and result is not _SKIPPED:
                response = result
        return response

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        """Run ``on_attempt`` before attempt number *attempt* (1-based)."""
        entries = self._hooks["on_attempt"]
        if entries:
            self._notify(entries, "on_attempt", (ctx, attempt))

    def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
        """Run ``on_retry`` after attempt *attempt* failed with *error*."""
        entries = self._hooks["on_retry"]
        if entries:
            self._notify(entries, "on_retry", (ctx, attempt, error, delay))

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        """Run ``on_error`` for a call that failed. Never raises."""
        entries = self._hooks["on_error"]
        if entries:
            self._notify(entries, "on_error", (ctx, request, error))

    def on_stream_chunk(self, ctx: CallContext, chunk: Any) -> None:
        """Run ``on_stream_chunk`` for one chunk of a streamed call."""
        entries = self._hooks["on_stream_chunk"]
        if entries:
            self._notify(entries, "on_stream_chunk", (ctx, chunk))

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        """Run ``on_stream_end`` when a streamed call ends. Never raises."""
        entries = self._hooks["on_stream_end"]
        if entries:
            self._notify(entries, "on_stream_end", (ctx, stream))

    def on_memory_pressure(self, level: object, report: object) -> None:
        """Run ``on_memory_pressure`` (from the memory manager's thread). Never raises."""
        entries = self._hooks["on_memory_pressure"]
        if entries:
            self._notify(entries, "on_memory_pressure", (level, report))

    def on_endpoint_state(self, change: Any) -> None:
        """Run ``on_endpoint_state`` for one endpoint's change of state. Never raises."""
        entries = self._hooks["on_endpoint_state"]
        if entries:
            self._notify(entries, "on_endpoint_state", (change,))

    def _notify(self, entries: tuple[Entry, ...], hook: str, args: tuple[Any, ...]) -> None:
        for entry in entries:
            self._call(entry, hook, args)

    def _call(self, entry: Entry, hook: str, args: tuple[Any, ...]) -> Any:
        """Call one plugin's hook with isolation; _SKIPPED when it failed or was skipped."""
        record = entry.record
        if record.disabled_until is not None and not record.allows(self._clock()):
            return _SKIPPED
        started = _perf()
        try:
            result = entry.call(*args)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin may not end the call (or the process)
            if _holds_interrupt(exc):
                raise
            self._failed(entry, hook, exc, _perf() - started)
            return _SKIPPED
        record.succeeded(entry.stats, _perf() - started)
        return result

    def _failed(self, entry: Entry, hook: str, exc: BaseException, duration: float) -> None:
        record = entry.record
        if entry.raises:
            if isinstance(exc, LLMPoolError):
                record.raised_on_purpose(entry.stats, duration)
                raise exc
            record.failed(entry.stats, duration, now=0.0, threshold=self._threshold, cooldown=None)
            raise PluginError(
                f"critical plugin {entry.name!r} failed in {hook}: {describe_error(exc)}",
                plugin=entry.name,
                hook=hook,
            ) from exc
        now = self._clock()
        cooldown = None if record.plugin.critical else self._cooldown
        tripped = record.failed(
            entry.stats, duration, now=now, threshold=self._threshold, cooldown=cooldown
        )
        self._log_failure(record, hook, exc, now, tripped)

    def _log_failure(
        self, record: PluginRecord, hook: str, exc: BaseException, now: float, tripped: bool
    ) -> None:
        if tripped:
            log.error(
                "plugin %s disabled for %.1f s after %d consecutive failures (last in %s: %s)",
                record.name,
                self._cooldown,
                record.consecutive_failures,
                hook,
                describe_error(exc),
            )
            return
        should, suppressed = record.should_log(now, self._log_interval)
        if should:
            log.warning(
                "plugin %s failed in %s: %s (the call goes on; %d similar messages suppressed)",
                record.name,
                hook,
                describe_error(exc),
                suppressed,
                exc_info=exc,
            )


def _holds_interrupt(exc: BaseException) -> bool:
    """Whether *exc* is an exception group carrying a KeyboardInterrupt."""
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
