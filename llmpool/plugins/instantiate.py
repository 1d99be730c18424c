"""Turning a plugin candidate (a class, an instance, an entry point's target)
into a validated :class:`~llmpool.LLMPlugin` instance, or a rejection that
says why. Used by :class:`~llmpool.PluginManager`; thread-safe (no state).
"""

from __future__ import annotations

from llmpool.plugins.base import LLMPlugin
from llmpool.plugins.loading import PluginCandidate, describe_error
from llmpool.plugins.validation import check_plugin

__all__ = ["Rejected", "assign_name", "instantiate", "not_a_plugin"]


class Rejected(Exception):
    """A candidate that cannot be registered (internal)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def not_a_plugin(target: object) -> str | None:
    """Why *target* is neither an LLMPlugin subclass nor an instance, or None."""
    if isinstance(target, LLMPlugin):
        return None
    if isinstance(target, type):
        if issubclass(target, LLMPlugin):
            return None
        return (
            f"{target.__qualname__} is not an LLMPlugin subclass "
            "(register_plugin() takes an LLMPlugin subclass or instance)"
        )
    return (
        f"{target!r} is not an LLMPlugin "
        "(register_plugin() takes an LLMPlugin subclass or instance)"
    )


def instantiate(candidate: PluginCandidate) -> LLMPlugin:
    """Turn a candidate into a validated LLMPlugin instance, or raise Rejected."""
    target = candidate.target
    label = candidate.name or candidate.default_name or str(getattr(target, "__name__", target))
    if isinstance(target, type):
        if not issubclass(target, LLMPlugin):
            raise Rejected(label, f"{target.__qualname__} is not an LLMPlugin subclass")
        try:
            plugin = target()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin may not end the process
            raise Rejected(label, f"instantiation failed: {describe_error(exc)}") from exc
    elif isinstance(target, LLMPlugin):
        plugin = target
    else:
        raise Rejected(label, f"{target!r} is not an LLMPlugin")
    assign_name(plugin, candidate)
    problem = check_plugin(plugin)
    if problem:
        raise Rejected(plugin.name or label, problem)
    return plugin


def assign_name(plugin: LLMPlugin, candidate: PluginCandidate) -> None:
    required = candidate.name
    if required is not None and plugin.name and plugin.name != required:
        raise Rejected(
            required,
            f"the entry point {required!r} loads a plugin named {plugin.name!r}; "
            "the names must match",
        )
    if not plugin.name:
        plugin.name = required or candidate.default_name or ""
