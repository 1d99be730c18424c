"""PluginManager: the registry of a client's plugins, their loading and statistics.

Registering or removing a plugin builds a new dispatch snapshot (see
:mod:`llmpool.plugins.dispatch`) under the registry lock and publishes it
with one attribute rebind, so a call in flight keeps the snapshot it started
with and dispatch itself takes no lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from stevedore import ExtensionManager

from llmpool.exceptions import ConfigError, PluginLoadError
from llmpool.forking import reset_after_fork
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.dispatch import EMPTY_SNAPSHOT, HookDispatcher, build_snapshot
from llmpool.plugins.instantiate import Rejected, instantiate, not_a_plugin
from llmpool.plugins.loading import (
    PluginCandidate,
    PluginLoadFailure,
    describe_error,
    directory_candidates,
    entry_point_candidates,
    extension_candidates,
)
from llmpool.plugins.stats import PluginRecord
from llmpool.state.base import StateBackend

__all__ = ["PluginManager"]

log = logging.getLogger(__name__)

#: Load failures kept for stats(); older ones are dropped.
MAX_LOAD_FAILURES = 100


class PluginManager(HookDispatcher):
    """The plugins of one client, and the dispatch of their hooks.

    Thread safety: one manager per client, shared by all threads. Every
    method may be called from any thread at any time; registering while
    calls are in flight is safe (calls in flight finish with the plugins
    they started with). The registry lock is never held across a plugin
    call or a log call.

    Isolation: a non-critical plugin's exception is logged (rate-limited,
    with the plugin and hook) and counted, and the call goes on. After
    *failure_threshold* consecutive failures the plugin is skipped for
    *cooldown* seconds (measured with *clock*), then tried again; one more
    failure disables it again, a success closes the breaker. A critical
    plugin's exception in a hook of :data:`~llmpool.plugins.base.RAISING_HOOKS`
    fails the call: an :class:`~llmpool.exceptions.LLMPoolError` as it is,
    anything else as :class:`~llmpool.exceptions.PluginError` from it.

    *state* is the shared-state backend every plugin receives in its
    :class:`~llmpool.plugins.PluginContext` (the client passes its own).

    *strict* turns load failures into
    :class:`~llmpool.exceptions.PluginLoadError`; otherwise they are logged
    and kept in :attr:`load_failures` and ``stats()``.
    """

    def __init__(
        self,
        *,
        strict: bool = False,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = 60.0,
        client_name: str | None = None,
        state: StateBackend | None = None,
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ConfigError(
                "failure_threshold must be an integer >= 1",
                key="failure_threshold",
                value=failure_threshold,
            )
        for key, value in (("cooldown", cooldown), ("log_interval", log_interval)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{key} must be a number >= 0", key=key, value=value)
        self._strict = strict
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._log_interval = log_interval
        self._client_name = client_name
        self._state = state
        # Guards _records, _pending, _failures and _closed, and serialises
        # snapshot rebuilds. Never held across a plugin call or a log call.
        self._lock = threading.RLock()
        self._records: dict[str, PluginRecord] = {}
        self._pending: dict[str, str] = {}
        self._failures: deque[PluginLoadFailure] = deque(maxlen=MAX_LOAD_FAILURES)
        self._closed = False
        # The published snapshot; replaced whole, never mutated.
        self._hooks = EMPTY_SNAPSHOT
        self._order: tuple[LLMPlugin, ...] = ()
        reset_after_fork(self, "_after_fork")

    @classmethod
    def from_extension_manager(
        cls,
        extensions: ExtensionManager[Any],
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> PluginManager:
        """Build a manager from a stevedore manager, e.g. one made with
        ``ExtensionManager.make_test_instance([...])``; *options* go to the
        constructor.
        """
        manager = cls(**options)
        manager.load_extensions(extensions, settings=settings)
        return manager

    def _after_fork(self) -> None:
        """In a forked child: replace locks another thread may have held at the fork."""
        self._lock = threading.RLock()
        with self._lock:
            for record in self._records.values():
                record.reset_locks()
            self._publish()

    # ------------------------------------------------------------------ registry

    @property
    def plugins(self) -> tuple[LLMPlugin, ...]:
        """The registered plugins in dispatch order (priority, then name)."""
        return self._order

    @property
    def strict(self) -> bool:
        """Whether a plugin that cannot be loaded raises PluginLoadError."""
        return self._strict

    @property
    def load_failures(self) -> tuple[PluginLoadFailure, ...]:
        """The most recent load failures (at most 100), oldest first."""
        with self._lock:
            return tuple(self._failures)

    def get(self, name: str) -> LLMPlugin | None:
        """The registered plugin called *name*, or None."""
        record = self._records.get(name)
        return record.plugin if record is not None else None

    def __len__(self) -> int:
        return len(self._order)

    def __bool__(self) -> bool:
        """Always True: a manager exists even with no plugin registered, so
        ``if client.plugins:`` means "the client has a plugin manager".
        Use ``len(manager)`` to count the plugins."""
        return True

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def register_plugin(
        self,
        plugin: LLMPlugin | type[LLMPlugin],
        settings: Mapping[str, Any] | None = None,
        *,
        source: str = "explicit",
    ) -> LLMPlugin | None:
        """Validate, set up and register *plugin* (a class is instantiated).

        Returns the registered instance. An object that is neither an
        :class:`~llmpool.LLMPlugin` subclass nor an instance of one
        is a mistake in the calling code, not a deployment failure: it raises
        :class:`~llmpool.exceptions.PluginLoadError` in every mode (and is
        recorded in :attr:`load_failures`). Any other failure (a bad hook
        signature, ``setup()`` raising, a name clash) is recorded and gives
        None, or raises PluginLoadError in strict mode.
        """
        reason = not_a_plugin(plugin)
        if reason is not None:
            label = str(getattr(plugin, "__qualname__", None) or repr(plugin))
            self._record_failure(PluginLoadFailure(label, source, reason), None, strict=True)
        module = getattr(plugin, "__module__", None)
        return self._register(
            PluginCandidate(target=plugin, source=source, module=module), settings
        )

    def unregister_plugin(self, name: str) -> bool:
        """Remove the plugin *name* and call its teardown. False if there was none."""
        with self._lock:
            record = self._records.pop(name, None)
            if record is not None:
                self._publish()
        if record is None:
            return False
        self._teardown(record)
        return True

    def load_entry_points(
        self,
        names: Sequence[str] | None = None,
        namespace: str = "llmpool.plugins",
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        load_all: bool = False,
    ) -> list[str]:
        """Load the installed plugins *names* (in that order) through stevedore.

        ``load_all=True`` loads every installed plugin of *namespace*;
        ``names=None`` otherwise loads nothing. *settings* maps a plugin name
        to its settings. Returns the names registered.
        """
        candidates, failures = entry_point_candidates(names, namespace, load_all=load_all)
        for failure in failures:
            self._record_failure(failure, None)
        return self._register_all(candidates, settings)

    def load_extensions(
        self,
        extensions: ExtensionManager[Any],
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """Register the plugins of a stevedore manager (the seam for
        ``make_test_instance``). Returns the names registered.
        """
        source = f"entry_point:{extensions.namespace}"
        return self._register_all(extension_candidates(extensions.extensions, source), settings)

    def load_plugins(
        self,
        plugin_dir: str | os.PathLike[str],
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """Load the plugins of a directory: each ``*.py`` file not starting
        with ``_``. The directory and the files must belong to the current
        user or to root and not be writable by group or others (the rule of
        sshd and sudo); a symlink must resolve inside the directory. A refusal
        names the path, its owner and mode, and the fix. Returns the names
        registered.
        """
        candidates, failures = directory_candidates(plugin_dir)
        for failure in failures:
            self._record_failure(failure, None)
        return self._register_all(candidates, settings)

    def close(self) -> None:
        """Tear every plugin down, in reverse dispatch order. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            records = [self._records[p.name] for p in reversed(self._order)]
            self._records.clear()
            self._publish()
        for record in records:
            self._teardown(record)

    # ------------------------------------------------------------------ registration

    def _register_all(
        self,
        candidates: Iterable[PluginCandidate],
        settings: Mapping[str, Mapping[str, Any]] | None,
    ) -> list[str]:
        registered = []
        for candidate in candidates:
            key = candidate.name or candidate.default_name or ""
            plugin = self._register(candidate, (settings or {}).get(key))
            if plugin is not None:
                registered.append(plugin.name)
        return registered

    def _register(
        self, candidate: PluginCandidate, settings: Mapping[str, Any] | None
    ) -> LLMPlugin | None:
        name = candidate.name or candidate.default_name or repr(candidate.target)
        try:
            plugin = instantiate(candidate)
            name = plugin.name
            self._reserve(name, candidate.source)
        except Rejected as rejected:
            self._record_failure(
                PluginLoadFailure(rejected.name or name, candidate.source, rejected.reason),
                rejected.__cause__,
            )
            return None
        try:
            self._setup(plugin, settings)
        except Rejected as rejected:
            with self._lock:
                self._pending.pop(name, None)
            self._record_failure(
                PluginLoadFailure(name, candidate.source, rejected.reason), rejected.__cause__
            )
            return None
        record = PluginRecord(
            plugin, source=candidate.source, module=candidate.module, sha256=candidate.sha256
        )
        with self._lock:
            self._pending.pop(name, None)
            closed = self._closed
            if not closed:
                self._records[name] = record
                self._publish()
        if closed:
            self._teardown(record)
            self._record_failure(
                PluginLoadFailure(name, candidate.source, "the plugin manager is closed"), None
            )
            return None
        log.debug("plugin %s %s registered from %s", name, plugin.version, candidate.source)
        return plugin

    def _reserve(self, name: str, source: str) -> None:
        with self._lock:
            if self._closed:
                raise Rejected(name, "the plugin manager is closed")
            existing = self._records.get(name)
            other = existing.source if existing is not None else self._pending.get(name)
            if other is not None:
                raise Rejected(
                    name,
                    f"plugin name {name!r} from {source} clashes with the plugin "
                    f"already registered from {other}",
                )
            self._pending[name] = source

    def _setup(self, plugin: LLMPlugin, settings: Mapping[str, Any] | None) -> None:
        context = PluginContext(
            name=plugin.name,
            settings=dict(settings or {}),
            logger=logging.getLogger(f"llmpool.plugins.{plugin.name}"),
            client_name=self._client_name,
            state=self._state,
        )
        try:
            plugin.setup(context)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin may not end the process
            raise Rejected(plugin.name, f"setup failed: {describe_error(exc)}") from exc

    def _record_failure(
        self, failure: PluginLoadFailure, cause: BaseException | None, *, strict: bool = False
    ) -> None:
        """Keep *failure* for stats(); raise PluginLoadError in strict mode (or
        when *strict*), else log it."""
        with self._lock:
            self._failures.append(failure)
        if self._strict or strict:
            raise PluginLoadError(
                f"plugin {failure.name!r} ({failure.source}) could not be loaded: {failure.reason}",
                plugin=failure.name,
                source=failure.source,
                reason=failure.reason,
            ) from cause
        log.warning("plugin %s (%s) not loaded: %s", failure.name, failure.source, failure.reason)

    def _publish(self) -> None:
        """Build and publish a new snapshot. Called with the registry lock held."""
        records = sorted(self._records.values(), key=lambda r: (r.plugin.priority, r.name))
        self._hooks = build_snapshot(records)
        self._order = tuple(record.plugin for record in records)

    def _teardown(self, record: PluginRecord) -> None:
        try:
            record.plugin.teardown()
        except KeyboardInterrupt:
            raise
        except BaseException:  # a plugin may not end the process (sys.exit() included)
            log.warning("plugin %s: teardown failed", record.name, exc_info=True)

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict[str, Any]:
        """Per-plugin statistics and load failures, as plain dicts.

        ``{"plugins": {name: {...}}, "order": [...], "load_failures": [...],
        "closed": bool}``; each plugin's dict holds its counters, breaker
        state, per-hook p50/p99 in microseconds and its own ``stats()`` under
        ``"own"``.
        """
        now = self._clock()
        with self._lock:
            records = [self._records[p.name] for p in self._order if p.name in self._records]
            failures = [f.as_dict() for f in self._failures]
            closed = self._closed
        plugins = {}
        for record in records:
            snapshot = record.snapshot(now)
            snapshot["own"] = self._own_stats(record)
            plugins[record.name] = snapshot
        return {
            "plugins": plugins,
            "order": [r.name for r in records],
            "load_failures": failures,
            "closed": closed,
        }

    @staticmethod
    def _own_stats(record: PluginRecord) -> dict[str, Any]:
        try:
            return dict(record.plugin.stats())
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin may not end the process (sys.exit() included)
            log.warning("plugin %s: stats() failed: %s", record.name, describe_error(exc))
            return {"error": describe_error(exc)}
