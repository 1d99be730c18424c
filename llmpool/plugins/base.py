"""The plugin contract: :class:`LLMPlugin`, its hooks and :class:`PluginContext`.

A plugin is a class with a ``name`` and any of the hooks listed in
:data:`HOOKS`. It defines only the hooks it needs; the base class's defaults
are recognised as "not overridden" and never called, so an unused hook costs
nothing on the request path.

This module imports nothing from llmpool's pool or memory packages: the
memory manager's pressure level reaches :meth:`LLMPlugin.on_memory_pressure`
as an opaque value (read it with :func:`level_name`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.models import CallContext, Request
from llmpool.state.base import StateBackend

__all__ = [
    "HOOKS",
    "HOOK_PREFIXES",
    "PLUGIN_API_VERSION",
    "ILLMPlugin",
    "LLMPlugin",
    "PluginContext",
    "RAISING_HOOKS",
    "level_name",
]

#: The plugin API this llmpool provides. A plugin's ``api_version`` must have
#: the same major number; minor versions only ever add optional hooks.
PLUGIN_API_VERSION = "1.0"

#: Every hook, in the order a call meets them, with its parameter names
#: (after ``self``). Load-time checks compare plugins against this table.
HOOKS: Mapping[str, tuple[str, ...]] = {
    "before_request": ("ctx", "request"),
    "on_attempt": ("ctx", "attempt"),
    "on_retry": ("ctx", "attempt", "error", "delay"),
    "after_response": ("ctx", "request", "response"),
    "on_error": ("ctx", "request", "error"),
    "on_stream_chunk": ("ctx", "chunk"),
    "on_stream_end": ("ctx", "stream"),
    "on_memory_pressure": ("level", "report"),
    "on_endpoint_state": ("change",),
}

#: Hooks through which a *critical* plugin can fail the call. The others run
#: when the call has already failed or finished, or on the memory manager's
#: thread, so an exception there is always isolated (logged and counted).
RAISING_HOOKS = frozenset(
    {"before_request", "on_attempt", "on_retry", "after_response", "on_stream_chunk"}
)

#: The method-name prefixes reserved for hooks: a method with one of them that
#: is not a known hook is a load error (a misspelt hook never runs silently).
HOOK_PREFIXES = ("on_", "before_", "after_")


def level_name(level: object) -> str:
    """Return a memory pressure *level* as a lower-case name.

    Accepts an enum member (its ``name``), a string, or anything with a
    ``str()``; plugins compare the result with names such as ``"normal"``.
    """
    name = getattr(level, "name", None)
    return (name if isinstance(name, str) else str(level)).lower()


@attrs.frozen(kw_only=True)
class PluginContext:
    """What a plugin receives in :meth:`~llmpool.LLMPlugin.setup`. Immutable.

    ``settings`` is the plugin's own mapping from configuration (empty when
    none was given); ``logger`` is ``llmpool.plugins.<name>``; ``client_name``
    names the client that owns the plugin manager, when it has one.
    ``state`` is the client's shared-state backend (see :mod:`llmpool.state`;
    None outside a client): a plugin that keeps budgets or caches uses it
    when it is ``shared``, and its own in-process state otherwise.
    """

    name: str
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    logger: logging.Logger = attrs.field(repr=False)
    client_name: str | None = None
    state: StateBackend | None = attrs.field(default=None, repr=False)


class LLMPlugin:
    """Base class of every llmpool plugin.

    Subclass it, set ``name``, and override the hooks you need. Thread
    safety: one instance serves every thread of the process; hooks run on the
    calling thread (``on_memory_pressure`` on the memory manager's thread).
    Keep per-call data in ``ctx.state[self.name]`` and guard shared state with
    your own lock, or set ``thread_safe = False`` and the manager serialises
    every call into this plugin with a per-plugin lock.

    Hooks that are not overridden are never called. A non-critical plugin's
    exception is logged and counted and the call goes on; set
    ``critical = True`` for a plugin whose exceptions must fail the call.
    """

    #: The plugin's unique name (the entry point name for installed plugins).
    name: str = ""
    #: The plugin's own version, shown in statistics.
    version: str = "0"
    #: The plugin API it was written for; the major must match PLUGIN_API_VERSION.
    api_version: str = PLUGIN_API_VERSION
    #: Lower runs first in every hook; ties are broken by name.
    priority: int = 100
    #: True: exceptions in before_request, on_attempt, on_retry, after_response
    #: and on_stream_chunk fail the call (as PluginError). False: isolated.
    critical: bool = False
    #: False: the manager serialises this plugin's calls with its own lock.
    thread_safe: bool = True

    # ------------------------------------------------------------------ lifecycle

    def setup(self, context: PluginContext) -> None:
        """Prepare the plugin: read ``context.settings``, open resources.

        Called once, when the plugin is registered; an exception here is a
        load failure and the plugin is not registered.
        """

    def teardown(self) -> None:
        """Release what :meth:`setup` acquired. Called once, on unregister or close.

        Calls that started before the plugin was unregistered may still be
        running its hooks while this runs.
        """

    def stats(self) -> Mapping[str, Any]:
        """The plugin's own statistics, included in the manager's ``stats()``."""
        return {}

    # ------------------------------------------------------------------ hooks

    def before_request(self, ctx: CallContext, request: Request) -> object:
        """Before the first attempt. Return None to leave the request as it
        is, a new :class:`~llmpool.Request` to change it, or any other
        value to answer the call without the network (a cache hit); the
        first answer wins and later plugins' ``before_request`` is skipped.
        """
        return None

    def on_attempt(self, ctx: CallContext, attempt: int) -> None:
        """Before each attempt (1 for the first) is sent."""

    def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
        """After attempt *attempt* failed with *error*; the next one follows in *delay* s."""

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> object:
        """After a successful call with its result. Return None to keep the
        result or another value to replace it. Not called for a streamed
        call: its result arrives through on_stream_chunk and on_stream_end.
        """
        return None

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        """After the call failed for good with *error* (the caller gets it next)."""

    def on_stream_chunk(self, ctx: CallContext, chunk: Any) -> None:
        """For each :class:`~llmpool.ChatChunk` of a streamed call."""

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        """When a streamed call ends (exhausted or closed); *stream* has
        ``text``, ``finish_reason`` and ``usage`` (None when not sent).
        """

    def on_memory_pressure(self, level: object, report: object) -> None:
        """The memory manager's state rose to *level*; drop caches if pressed.

        Runs on the memory manager's thread. Read *level* with
        :func:`~llmpool.plugins.level_name`: ``"warn"``, ``"gc"``, ``"shed"`` or ``"critical"``
        (``"normal"`` means the pressure is over).
        """

    def on_endpoint_state(self, change: Any) -> None:
        """An endpoint of the client's group changed state, once per change.

        *change* is a :class:`~llmpool.endpoints.StateChange` (``endpoint``,
        ``old``, ``new``, ``reason``, ``cooldown`` seconds). Runs on the
        thread whose call caused the change (or the active checks' thread).
        """


#: An alias for those who name interfaces with an I.
ILLMPlugin = LLMPlugin
