"""load_config: YAML, dicts and the environment; every error names file, key and line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import llmpool
from llmpool import ConfigError, load_config

SEED = """\
client:
  base_url: http://127.0.0.1:8000/v1
connection_pool: {max_connections: 10, max_keepalive: 10, timeout: 30.0}
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "llmpool.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_seed_file_loads(tmp_path: Path) -> None:
    """The seed's connection_pool keys load into PoolConfig."""
    config = load_config(write(tmp_path, SEED), environ={})
    assert config.connection_pool.max_connections == 10
    assert config.connection_pool.timeout == 30.0
    assert config.client.base_url == "http://127.0.0.1:8000/v1"
    assert config.source and config.source.endswith("llmpool.yaml")


def test_every_section_loads(tmp_path: Path) -> None:
    """client (with retry), connection_pool, memory and plugins all load and validate."""
    text = (
        SEED
        + """\
memory:
  max_memory_mb: 256
  reject_on_pressure: true
plugins:
  names: [logging, usage]
  settings:
    logging: {log_bodies: true}
  plugin_dirs: []
"""
    )
    text = text.replace(
        "client:\n", "client:\n  deadline: 60\n  retry: {max_attempts: 5, max_delay: 2.0}\n"
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.client.deadline == 60
    assert config.client.retry.max_attempts == 5
    assert config.memory is not None and config.memory.max_memory_mb == 256
    assert config.plugins.names == ("logging", "usage")
    assert config.plugins.settings["logging"] == {"log_bodies": True}


def test_dict_source_and_defaults() -> None:
    """A dict works like a file; no source at all gives the defaults."""
    config = load_config({"connection_pool": {"max_connections": 3}}, environ={})
    assert config.connection_pool.max_connections == 3
    assert config.connection_pool.max_keepalive == 3
    assert load_config(None, environ={}).connection_pool == llmpool.PoolConfig()


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A misspelt key names file, key path and line, and suggests the close match."""
    path = write(tmp_path, SEED.replace("timeout: 30.0}", "timeout: 30.0, max_conections: 3}"))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert err.key == "connection_pool.max_conections"
    assert err.file == str(path) and err.line == 3
    assert "did you mean 'max_connections'" in str(err)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    """A top-level key that is no section is rejected with a suggestion."""
    path = write(tmp_path, SEED + "conection_pool: {}\n")
    with pytest.raises(ConfigError, match="did you mean 'connection_pool'") as info:
        load_config(path, environ={})
    assert info.value.line == 4


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("  max_connections: ten", "connection_pool.max_connections"),
        ("  max_connections: 0", "connection_pool.max_connections"),
        ("  pool_timeout: -1", "connection_pool.pool_timeout"),
        ("  tcp_keepalive: maybe", "connection_pool.tcp_keepalive"),
    ],
)
def test_wrong_type_or_range_names_the_key_and_line(tmp_path: Path, line: str, key: str) -> None:
    """Wrong types and out-of-range values name file, dotted key and line."""
    path = write(tmp_path, f"connection_pool:\n  timeout: 5\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key
    assert info.value.line == 3
    assert str(path) in str(info.value)


def test_missing_file_and_invalid_yaml(tmp_path: Path) -> None:
    """A missing file and broken YAML raise ConfigError naming the file (and the line)."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml", environ={})
    path = write(tmp_path, "client:\n  base_url: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(path, environ={})
    assert info.value.line is not None


def test_environment_overrides_the_file_and_arguments_override_both(tmp_path: Path) -> None:
    """Precedence: explicit overrides > LLMPOOL_* environment > file > defaults."""
    path = write(tmp_path, SEED)
    env = {"LLMPOOL_MAX_CONNECTIONS": "20", "LLMPOOL_TIMEOUT": "12.5", "LLMPOOL_PLUGINS": "usage"}
    config = load_config(path, environ=env)
    assert config.connection_pool.max_connections == 20
    assert config.client.timeout == 12.5
    assert config.plugins.names == ("usage",)
    overrides = {"connection_pool.max_connections": 4, "connection_pool.max_keepalive": 4}
    config = load_config(path, environ=env, overrides=overrides)
    assert config.connection_pool.max_connections == 4


def test_bad_environment_value_names_the_variable() -> None:
    """A non-numeric LLMPOOL_ value names the variable and the key."""
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"LLMPOOL_MAX_CONNECTIONS": "lots"})
    assert "LLMPOOL_MAX_CONNECTIONS" in str(info.value)
    assert info.value.key == "connection_pool.max_connections"


def test_provider_key_variable_is_used(tmp_path: Path) -> None:
    """Without an api_key, OPENAI_API_KEY / ANTHROPIC_API_KEY (by provider) is read."""
    config = load_config(write(tmp_path, SEED), environ={"OPENAI_API_KEY": "sk-env"})
    assert config.client.api_key == "sk-env"
    anthropic = SEED.replace("client:\n", "client:\n  provider: anthropic\n")
    config = load_config(
        write(tmp_path, anthropic), environ={"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "sk-a"}
    )
    assert config.client.api_key == "sk-a"


def test_secret_in_a_readable_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file holding an API key and readable by others triggers a warning (not the key)."""
    text = SEED.replace("client:\n", "client:\n  api_key: sk-file-secret-123456\n")
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        load_config(write(tmp_path, text, mode=0o644), environ={})
        assert any("readable by other users" in r.getMessage() for r in caplog.records)
        caplog.clear()
        load_config(write(tmp_path, text, mode=0o600), environ={})
    assert not caplog.records
    assert all("sk-file-secret" not in r.getMessage() for r in caplog.records)


def test_secrets_are_masked_in_the_repr_and_dict(tmp_path: Path) -> None:
    """The API key never shows in the config's repr or its masked dict."""
    text = SEED.replace("client:\n", "client:\n  api_key: sk-file-secret-123456\n")
    config = load_config(write(tmp_path, text), environ={})
    assert "sk-file-secret" not in repr(config)
    assert "sk-file-secret" not in str(config.to_dict())
    assert config.to_dict(mask_secrets=False)["client"]["api_key"] == "sk-file-secret-123456"


def test_client_from_config_builds_a_working_client(tmp_path: Path) -> None:
    """Client.from_config accepts the file and carries its pool settings."""
    path = write(tmp_path, SEED)
    client = llmpool.Client.from_config(os.fspath(path))
    try:
        assert client.pool.config.max_connections == 10
        assert client.base_url == "http://127.0.0.1:8000/v1"
    finally:
        client.close()


def test_missing_base_url_takes_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without base_url the client takes OPENAI_BASE_URL, else the provider's default."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with llmpool.Client.from_config({"connection_pool": {"max_connections": 2}}) as client:
        assert client.base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    with llmpool.Client.from_config({}) as client:
        assert client.base_url == "http://127.0.0.1:8000/v1"
