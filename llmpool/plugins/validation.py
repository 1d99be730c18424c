"""Load-time checks of a plugin: its attributes, API version and hook signatures.

Each check returns a problem (a sentence naming the plugin) or None. They run
once, when a plugin is registered, so that a misspelt hook or a wrong
parameter list is a load error instead of a hook that silently never runs.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from typing import Any

from llmpool.plugins.base import HOOK_PREFIXES, HOOKS, PLUGIN_API_VERSION, LLMPlugin

__all__ = ["NAME_PATTERN", "check_plugin", "overridden_hooks"]

#: What a plugin name may look like: it appears in configuration, in the
#: LLMPOOL_PLUGINS variable and as an entry point name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def overridden_hooks(plugin: LLMPlugin) -> Iterator[str]:
    """Yield the names of the hooks *plugin*'s class overrides, in HOOKS order."""
    cls = type(plugin)
    for hook in HOOKS:
        if getattr(cls, hook, None) is not getattr(LLMPlugin, hook):
            yield hook


def check_plugin(plugin: LLMPlugin) -> str | None:
    """Return the first problem that makes *plugin* unloadable, or None."""
    return (
        _check_attributes(plugin)
        or _check_api_version(plugin)
        or _check_unknown_hooks(plugin)
        or _check_signatures(plugin)
    )


def _check_attributes(plugin: LLMPlugin) -> str | None:
    name = plugin.name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return f"plugin name {name!r} is not valid (letters, digits, '_', '.', '-')"
    if not isinstance(plugin.priority, int) or isinstance(plugin.priority, bool):
        return f"plugin {name!r}: priority must be an int, got {plugin.priority!r}"
    if not isinstance(plugin.version, str):
        return f"plugin {name!r}: version must be a string, got {plugin.version!r}"
    return None


def _check_api_version(plugin: LLMPlugin) -> str | None:
    wanted = str(plugin.api_version).split(".", 1)[0]
    provided = PLUGIN_API_VERSION.split(".", 1)[0]
    if wanted != provided:
        return (
            f"plugin {plugin.name!r} targets plugin API {plugin.api_version}, "
            f"but llmpool provides {PLUGIN_API_VERSION} (the major versions must match)"
        )
    return None


def _check_unknown_hooks(plugin: LLMPlugin) -> str | None:
    for attr in sorted(dir(type(plugin))):
        if not attr.startswith(HOOK_PREFIXES) or attr in HOOKS:
            continue
        if not callable(getattr(type(plugin), attr, None)):
            continue
        close = difflib.get_close_matches(attr, HOOKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (
            f"plugin {plugin.name!r} defines {attr!r}, which is not a hook{hint} "
            f"(methods named on_*, before_* or after_* are reserved for hooks: "
            f"{', '.join(HOOKS)})"
        )
    return None


def _check_signatures(plugin: LLMPlugin) -> str | None:
    for hook in overridden_hooks(plugin):
        method = getattr(plugin, hook)
        problem = _signature_problem(method, HOOKS[hook])
        if problem:
            expected = f"{hook}(self, {', '.join(HOOKS[hook])})"
            return (
                f"plugin {plugin.name!r}: hook {hook} {problem}; "
                f"the expected signature is {expected}"
            )
    return None


def _signature_problem(method: Any, expected: tuple[str, ...]) -> str | None:
    """Why *method* (bound) cannot take the *expected* arguments, or None."""
    if not callable(method):
        return "is not callable"
    if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
        return "is async, but hooks are called synchronously"
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: nothing to check
    return _parameters_problem(list(signature.parameters.values()), expected)


def _parameters_problem(params: list[inspect.Parameter], expected: tuple[str, ...]) -> str | None:
    positional = [p for p in params if p.kind in _POSITIONAL]
    takes_varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    shown = f"({', '.join(['self', *(str(p) for p in params)])})"
    if len(positional) < len(expected) and not takes_varargs:
        return f"takes {shown}: too few parameters"
    for param, name in zip(positional, expected, strict=False):
        if param.name not in (name, f"_{name}"):
            return f"takes {shown}: parameter {param.name!r} should be named {name!r}"
    for param in positional[len(expected) :]:
        if param.default is inspect.Parameter.empty:
            return f"takes {shown}: too many parameters"
    for param in params:
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is param.empty:
            return f"takes {shown}: keyword-only parameter {param.name!r} has no default"
    return None
