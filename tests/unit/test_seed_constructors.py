"""The original design's constructors and registry calls: keywords beside config objects."""

from __future__ import annotations

import pytest

import llmpool
from llmpool import (
    ConfigError,
    ConnectionPool,
    MemoryConfig,
    MemoryManager,
    PluginLoadError,
    PluginManager,
    PoolConfig,
)
from llmpool.plugins import LLMPlugin


class Quiet(LLMPlugin):
    name = "quiet"


# --------------------------------------------------------------------------- ConnectionPool


def test_pool_keywords_build_the_same_config() -> None:
    """The design's keyword form of ConnectionPool builds the same PoolConfig."""
    with ConnectionPool(max_connections=10, max_keepalive=10, timeout=30.0) as pool:
        assert pool.config == PoolConfig(max_connections=10, max_keepalive=10, timeout=30.0)


def test_pool_keywords_are_validated_like_the_config() -> None:
    """A bad keyword value raises the PoolConfig validator's ConfigError, naming the field."""
    with pytest.raises(ConfigError) as info:
        ConnectionPool(max_connections=0)
    assert info.value.key == "max_connections"
    with pytest.raises(ConfigError, match="max_keepalive"):
        ConnectionPool(max_connections=2, max_keepalive=5)


def test_pool_config_and_keywords_together_are_refused() -> None:
    """Passing a PoolConfig and keywords is a ConfigError naming the keywords."""
    with pytest.raises(ConfigError, match="not both") as info:
        ConnectionPool(PoolConfig(), max_connections=5)
    assert info.value.key == "max_connections"


def test_pool_unknown_keyword_is_named() -> None:
    """A misspelt keyword is a ConfigError naming it, not a TypeError."""
    with pytest.raises(ConfigError, match="max_conections") as info:
        ConnectionPool(max_conections=5)
    assert info.value.key == "max_conections"


def test_pool_refuses_a_config_of_the_wrong_type() -> None:
    """ConnectionPool(MemoryConfig()) is a ConfigError naming the expected class."""
    with pytest.raises(ConfigError, match="PoolConfig"):
        ConnectionPool(MemoryConfig())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MemoryManager


def test_memory_keywords_build_the_same_config() -> None:
    """MemoryManager(max_memory_mb=512) equals MemoryManager(MemoryConfig(max_memory_mb=512))."""
    manager = MemoryManager(max_memory_mb=512, sample_interval=2.0)
    assert manager.config == MemoryConfig(max_memory_mb=512, sample_interval=2.0)
    assert not manager.running


def test_memory_keywords_are_validated_and_checked() -> None:
    """Bad values, unknown keywords and config-plus-keywords are ConfigErrors naming the key."""
    with pytest.raises(ConfigError) as bad:
        MemoryManager(max_memory_mb=-1)
    assert bad.value.key == "max_memory_mb"
    with pytest.raises(ConfigError, match="max_memory") as unknown:
        MemoryManager(max_memory=512)
    assert unknown.value.key == "max_memory"
    with pytest.raises(ConfigError, match="not both"):
        MemoryManager(MemoryConfig(), max_memory_mb=512)


# --------------------------------------------------------------------------- PluginManager


@pytest.mark.parametrize("strict", [False, True])
def test_register_plugin_refuses_a_non_plugin(strict: bool) -> None:
    """An object that is not an LLMPlugin raises PluginLoadError, strict or not, and is recorded."""
    manager = PluginManager(strict=strict)
    with pytest.raises(PluginLoadError, match="not an LLMPlugin"):
        manager.register_plugin(object())  # type: ignore[arg-type]
    with pytest.raises(PluginLoadError, match="not an LLMPlugin subclass"):
        manager.register_plugin(dict)  # type: ignore[arg-type]
    assert len(manager.load_failures) == 2
    assert len(manager) == 0


def test_empty_plugin_manager_is_truthy() -> None:
    """bool(manager) is True even with no plugins, so `if client.plugins:` means "has a manager"."""
    manager = PluginManager()
    assert len(manager) == 0
    assert bool(manager) is True


def test_client_refuses_a_non_plugin_object() -> None:
    """Client(plugins=[object()]) raises PluginLoadError at construction, never drops it."""
    with pytest.raises(PluginLoadError):
        llmpool.Client(base_url="http://127.0.0.1:9/v1", api_key="k", plugins=[object()])
