"""Every configuration key reaches the client built from it (no option lost on the way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

import llmpool
from llmpool.config import ClientSettings, MemoryConfig, PluginsConfig, PoolConfig
from llmpool.config_loading import load_config
from llmpool.endpoints.model import RoutingConfig
from llmpool.state import StateConfig


def _every_key(tmp_path: Path) -> dict[str, Any]:
    """A configuration that sets every key of every section to a value other than its default."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir(mode=0o700)
    (plugin_dir / "from_dir.py").write_text(
        "import llmpool\n\n\nclass FromDir(llmpool.LLMPlugin):\n    name = 'from-dir'\n"
    )
    (plugin_dir / "from_dir.py").chmod(0o600)
    return {
        "client": {
            "base_url": "http://127.0.0.1:9/proxy/v1",
            "api_key": "sk-test-0123456789",
            "api_key_env": "NOT_READ_WHEN_A_KEY_IS_GIVEN",
            "provider": "anthropic",
            "timeout": 7.0,
            "deadline": 70.0,
            "retry": {
                "max_attempts": 5,
                "base_delay": 0.25,
                "max_delay": 3.0,
                "max_retry_after": 9.0,
                "retry_statuses": [503],
                "retry_read_timeout": False,
                "retry_connect_errors": False,
            },
            "max_response_bytes": 1234,
            "max_stream_text": 4321,
            "transport": "requests",
            "follow_redirects": True,
            "default_headers": {"X-Team": "blue"},
        },
        "connection_pool": {
            "max_connections": 3,
            "max_keepalive": 2,
            "timeout": 11.0,
            "connect_timeout": 2.0,
            "read_timeout": 12.0,
            "pool_timeout": 4.0,
            "keepalive_expiry": 5.0,
            "max_connection_age": 500.0,
            "tcp_keepalive": False,
            "tcp_keepidle": 61,
            "tcp_keepintvl": 62,
            "tcp_keepcnt": 6,
            "max_hosts": 4,
            "leak_timeout": 30.0,
            "expected_threads": 3,
            "verify": False,
            "ca_certs": str(ca_file),
            "cert_file": str(cert_file),
            "key_file": str(cert_file),
            "proxy_url": "http://127.0.0.1:3128",
        },
        "memory": {
            "max_memory_mb": 2048.0,
            "sample_interval": 2.0,
            "warn": 0.6,
            "gc": 0.7,
            "shed": 0.8,
            "critical": 0.9,
            "consecutive_samples": 2,
            "hysteresis": 0.1,
            "gc_cooldown": 10.0,
            "reject_on_pressure": True,
            "history": 30,
            "trim_on_gc": True,
            "max_operations": 16,
            "pressure_repeat": 5.0,
        },
        "state": {
            "url": "redis://127.0.0.1:9/3",
            "backend": "redis",
            "key_prefix": "llmpool-test",
            "timeout": 0.5,
            "on_backend_error": "deny",
        },
        "plugins": {
            "names": ["usage"],
            "settings": {"usage": {"max_models": 7}},
            "plugin_dirs": [str(plugin_dir)],
            "strict": True,
        },
    }


def test_the_configuration_sets_every_key(tmp_path: Path) -> None:
    """The configuration below names every key, so a new key must be added to it."""
    data = _every_key(tmp_path)
    for section, cls in [
        ("client", ClientSettings),
        ("connection_pool", PoolConfig),
        ("memory", MemoryConfig),
        ("plugins", PluginsConfig),
        ("state", StateConfig),
    ]:
        assert set(data[section]) == set(attrs.fields_dict(cls)), section
        defaults = cls()
        for key, value in data[section].items():
            if key != "retry":
                assert getattr(defaults, key) != value, f"{section}.{key} is its default"
    retry_fields = set(attrs.fields_dict(llmpool.RetryPolicy))
    assert set(data["client"]["retry"]) == retry_fields


def test_every_key_reaches_the_client(tmp_path: Path) -> None:
    """A client from a configuration with every key set carries each of them."""
    config = load_config(_every_key(tmp_path), environ={})
    with llmpool.Client.from_config(config) as client:
        assert client.options == config.client.options()
        assert client.options.retry.max_attempts == 5
        assert client.base_url == "http://127.0.0.1:9/proxy/v1"
        assert client.provider.name == "anthropic"
        assert client.provider.api_key == "sk-test-0123456789"
        assert client.provider.headers()["X-Team"] == "blue"
        assert client.transport == "requests"
        assert client.pool.config == config.connection_pool
        assert client.memory is not None and client.memory.config == config.memory
        plugins = client.plugins
        assert plugins is not None and plugins.strict
        usage = plugins.get("usage")
        assert usage is not None and usage.settings.max_models == 7  # type: ignore[attr-defined]
        assert plugins.get("from-dir") is not None  # plugin_dirs reached the manager
        state = client.state
        assert state.name == "redis" and state.on_backend_error == "deny"
        assert state.config == config.state  # type: ignore[attr-defined]


def _every_group_key() -> dict[str, Any]:
    """An endpoint group whose every key (endpoint, routing, health) is not its default."""
    return {
        "endpoints": [
            {
                "name": "east",
                "base_url": "http://127.0.0.1:9/east/v1",
                "provider": "anthropic",
                "api_key_env": "LLMPOOL_TEST_EAST_KEY",
                "weight": 3.0,
                "models": ["big"],
                "max_connections": 2,
                "rpm": 600.0,
                "tpm": 90000.0,
            },
            {"name": "west", "base_url": "http://127.0.0.1:9/west/v1"},
        ],
        "routing": {
            "strategy": "round_robin",
            "health": {
                "window": 10.0,
                "min_calls": 3,
                "failure_rate": 0.25,
                "consecutive_failures": 2,
                "cooldown": 1.5,
                "max_cooldown": 60.0,
                "latency_alpha": 0.5,
                "check_interval": 30.0,
                "wait_for_recovery": False,
            },
            "fallbacks": {"big": ["small"]},
            "context_window_fallbacks": {"small": ["long"]},
        },
    }


def test_the_group_configuration_sets_every_key() -> None:
    """The group configuration below names every key of an endpoint, routing and health."""
    data = _every_group_key()
    endpoint = data["endpoints"][0]
    assert set(endpoint) | {"api_key"} == set(attrs.fields_dict(llmpool.Endpoint))
    assert set(data["routing"]) == set(attrs.fields_dict(RoutingConfig))
    assert set(data["routing"]["health"]) == set(attrs.fields_dict(llmpool.HealthConfig))
    defaults = llmpool.HealthConfig()
    for key, value in data["routing"]["health"].items():
        assert getattr(defaults, key) != value, f"routing.health.{key} is its default"


def test_every_group_key_reaches_the_client() -> None:
    """A client from a group configuration routes, heals and falls back as configured."""
    config = load_config(_every_group_key(), environ={"LLMPOOL_TEST_EAST_KEY": "sk-east"})
    with llmpool.Client.from_config(config) as client:
        group = client._group
        assert group is not None
        assert client.endpoints == config.endpoints
        east = group.routes["east"]
        assert east.provider.name == "anthropic" and east.provider.api_key == "sk-east"
        assert east.transport.config.max_connections == 2  # type: ignore[attr-defined]
        assert group.routing == "round_robin"
        assert group.book.config == config.routing.health
        assert group.checks is not None  # check_interval started the active checks
        assert group.fallbacks == {"big": ("small",)}
        assert group.context_fallbacks == {"small": ("long",)}
        assert [e.weight for e in client.endpoints] == [3.0, 1.0]


def test_a_key_in_the_endpoints_list_is_refused(tmp_path: Path) -> None:
    """An API key written in the file is refused, naming the key, its file and line."""
    path = tmp_path / "llmpool.yaml"
    path.write_text(
        "endpoints:\n  - name: a\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-inline\n"
    )
    with pytest.raises(llmpool.ConfigError) as info:
        load_config(str(path), environ={})
    err = info.value
    assert err.key == "endpoints[0].api_key" and err.line == 4 and err.file == str(path)
    assert "sk-inline" not in str(err)
