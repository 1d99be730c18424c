"""PoolConfig and MemoryConfig validate on construction and name the field."""

from __future__ import annotations

import attrs
import pytest

from llmpool import ConfigError, MemoryConfig, PoolConfig


def test_pool_defaults_follow_the_seed() -> None:
    """Defaults: 10 connections, keep-alive = cap, 30 s timeout, 60 s expiry, TCP keep-alive on."""
    cfg = PoolConfig()
    assert cfg.max_connections == 10
    assert cfg.max_keepalive == 10
    assert cfg.timeout == 30.0
    assert cfg.keepalive_expiry == 60.0
    assert cfg.tcp_keepalive is True
    assert (cfg.tcp_keepidle, cfg.tcp_keepintvl, cfg.tcp_keepcnt) == (60, 60, 5)
    assert cfg.verify is True
    assert cfg.effective_pool_timeout == 30.0


def test_max_keepalive_defaults_to_the_cap() -> None:
    """max_keepalive follows max_connections when not given."""
    assert PoolConfig(max_connections=3).max_keepalive == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_connections", 0),
        ("max_connections", "10"),
        ("max_connections", True),
        ("timeout", -1.0),
        ("timeout", float("nan")),
        ("pool_timeout", 0),
        ("keepalive_expiry", "soon"),
        ("tcp_keepalive", "yes"),
        ("max_hosts", 0),
    ],
)
def test_bad_pool_values_name_field_and_value(field: str, value: object) -> None:
    """A bad value raises ConfigError naming the field and the value."""
    with pytest.raises(ConfigError) as info:
        PoolConfig(**{field: value})
    assert info.value.key == field
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_keepalive_above_cap_is_rejected() -> None:
    """Idle connections kept cannot exceed the cap."""
    with pytest.raises(ConfigError, match="max_keepalive"):
        PoolConfig(max_connections=2, max_keepalive=5)


def test_evolve_validates_again() -> None:
    """attrs.evolve re-runs validation."""
    with pytest.raises(ConfigError):
        attrs.evolve(PoolConfig(), max_connections=-1)


def test_proxy_credentials_not_in_repr() -> None:
    """A proxy URL (which may hold credentials) stays out of the repr."""
    cfg = PoolConfig(proxy_url="http://user:secret@proxy:3128")
    assert "secret" not in repr(cfg)


def test_memory_defaults_and_order() -> None:
    """Memory thresholds default to the seed's 80% gc trigger and must be ordered."""
    cfg = MemoryConfig()
    assert (cfg.warn, cfg.gc, cfg.shed, cfg.critical) == (0.70, 0.80, 0.90, 0.95)
    assert cfg.consecutive_samples == 3
    with pytest.raises(ConfigError):
        MemoryConfig(warn=0.9, gc=0.8)
    with pytest.raises(ConfigError, match="sample_interval"):
        MemoryConfig(sample_interval=0)
