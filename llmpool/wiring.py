"""How a client gets its parts: the base URL, the pool (or any transport),
the plugin manager and the memory manager, each either given (and shared)
or built (and owned by the client).

Functions called once, from ``Client.__init__``; thread-safe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.config import MemoryConfig, PoolConfig
from llmpool.exceptions import ConfigError
from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.interfaces import Transport
from llmpool.providers import Provider
from llmpool.state import StateBackend

if TYPE_CHECKING:
    from llmpool.memory import MemoryManager
    from llmpool.plugins import PluginManager

__all__ = ["make_memory", "make_plugins", "make_pool", "resolve_base_url"]


def resolve_base_url(base_url: str | None, provider: Provider) -> str:
    """*base_url*, else the provider's environment variable (``OPENAI_BASE_URL``,
    ``ANTHROPIC_BASE_URL``), else the provider's default, as the SDKs do."""
    if base_url is not None:
        return base_url
    env = provider.base_url_env
    if env and os.environ.get(env):
        return os.environ[env]
    if provider.default_base_url:
        return provider.default_base_url
    raise ConfigError(
        f"base_url is required: the {provider.name!r} provider has no default "
        + (f"and {env} is not set" if env else "base URL"),
        key="base_url",
    )


def make_pool(pool: Any) -> tuple[Transport, bool]:
    """``(transport, owned)``: a PoolConfig or None builds an owned
    ConnectionPool; any Transport is used as it is, shared."""
    if pool is None or isinstance(pool, PoolConfig):
        return ConnectionPool(pool), True
    if isinstance(pool, Transport):
        return pool, False
    raise ConfigError(
        "pool must be a ConnectionPool (or another Transport), a PoolConfig or None, "
        f"got {type(pool).__name__}",
        key="pool",
    )


def make_plugins(
    plugins: Any,
    settings: Mapping[str, Mapping[str, Any]] | None,
    dirs: Sequence[str],
    *,
    strict: bool = False,
    state: StateBackend | None = None,
) -> tuple[PluginManager | None, bool]:
    from llmpool.plugins import PluginManager, resolve_plugin_names

    if isinstance(plugins, PluginManager):
        return plugins, False
    objects = [p for p in (plugins or ()) if not isinstance(p, str)]
    names = resolve_plugin_names([p for p in (plugins or ()) if isinstance(p, str)])
    if not names and not objects and not dirs:
        return None, False
    manager = PluginManager(strict=strict, state=state)
    try:
        if names:
            manager.load_entry_points(names, settings=settings)
        for directory in dirs:
            manager.load_plugins(directory, settings=settings)
        for plugin in objects:
            manager.register_plugin(plugin, (settings or {}).get(getattr(plugin, "name", ""), None))
    except BaseException:
        manager.close()  # tear down the plugins already set up
        raise
    return manager, True


def make_memory(memory: Any) -> tuple[MemoryManager | None, bool]:
    if memory is None:
        return None, False
    from llmpool.memory import MemoryManager

    if isinstance(memory, MemoryManager):
        return memory, False
    if isinstance(memory, MemoryConfig):
        manager = MemoryManager(memory)
        manager.start()
        return manager, True
    raise ConfigError(
        f"memory must be a MemoryConfig or a MemoryManager, got {type(memory).__name__}",
        key="memory",
    )
