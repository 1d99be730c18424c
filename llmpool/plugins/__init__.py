"""Plugins: the :class:`LLMPlugin` contract, the :class:`PluginManager` and loading.

Plugins are found through the stevedore entry-point namespace
``llmpool.plugins`` (the built-in ones too) or in a plugin directory, and run
with isolation, ordering and statistics. See the documentation's plugins page.
"""

from __future__ import annotations

from llmpool.plugins.base import (
    HOOKS,
    PLUGIN_API_VERSION,
    RAISING_HOOKS,
    ILLMPlugin,
    LLMPlugin,
    PluginContext,
    level_name,
)
from llmpool.plugins.loading import (
    ENV_VAR,
    PluginLoadFailure,
    describe_installed,
    resolve_plugin_names,
)
from llmpool.plugins.manager import PluginManager

__all__ = [
    "ENV_VAR",
    "HOOKS",
    "ILLMPlugin",
    "LLMPlugin",
    "PLUGIN_API_VERSION",
    "PluginContext",
    "PluginLoadFailure",
    "PluginManager",
    "RAISING_HOOKS",
    "describe_installed",
    "level_name",
    "resolve_plugin_names",
]
