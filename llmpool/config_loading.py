"""load_config: the configuration values built from YAML, a dict and the environment.

Precedence, highest first: *overrides* (the CLI's flags), ``LLMPOOL_*``
environment variables (:data:`ENV_VARS`), the file or dict, the defaults.
Every error is a :class:`~llmpool.exceptions.ConfigError` naming the file,
the dotted key and, for YAML, the line. The values themselves live in
:mod:`llmpool.config`; reading the file in :mod:`llmpool.config_yaml`.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.config import (
    ClientConfig,
    ClientSettings,
    MemoryConfig,
    PluginsConfig,
    PoolConfig,
)
from llmpool.config_yaml import read_yaml
from llmpool.endpoints.model import Endpoint, HealthConfig, RoutingConfig, check_endpoints
from llmpool.exceptions import ConfigError
from llmpool.redaction import is_secret_header
from llmpool.retry import RetryPolicy
from llmpool.state.config import StateConfig
from llmpool.validators import holds_credentials

# ClientConfig, what load_config returns, is re-exported for callers that need both.
__all__ = ["ENV_VARS", "PROVIDER_KEY_VARS", "ClientConfig", "load_config"]

log = logging.getLogger(__name__)


#: Environment overrides: variable -> dotted key. Precedence: explicit
#: arguments > environment > file > defaults.
ENV_VARS: dict[str, str] = {
    "LLMPOOL_BASE_URL": "client.base_url",
    "LLMPOOL_API_KEY": "client.api_key",
    "LLMPOOL_PROVIDER": "client.provider",
    "LLMPOOL_TIMEOUT": "client.timeout",
    "LLMPOOL_DEADLINE": "client.deadline",
    "LLMPOOL_TRANSPORT": "client.transport",
    "LLMPOOL_MAX_ATTEMPTS": "client.retry.max_attempts",
    "LLMPOOL_MAX_CONNECTIONS": "connection_pool.max_connections",
    "LLMPOOL_MAX_KEEPALIVE": "connection_pool.max_keepalive",
    "LLMPOOL_POOL_TIMEOUT": "connection_pool.pool_timeout",
    "LLMPOOL_KEEPALIVE_EXPIRY": "connection_pool.keepalive_expiry",
    "LLMPOOL_MAX_MEMORY_MB": "memory.max_memory_mb",
    "LLMPOOL_PLUGINS": "plugins.names",
    "LLMPOOL_PLUGIN_DIRS": "plugins.plugin_dirs",
    "LLMPOOL_STATE_URL": "state.url",
}

#: The API key variable read for each provider when none is configured.
PROVIDER_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

_SECTIONS: dict[str, Any] = {
    "client": ClientSettings,
    "connection_pool": PoolConfig,
    "memory": MemoryConfig,
    "plugins": PluginsConfig,
    "state": StateConfig,
    "routing": RoutingConfig,
    "endpoints": Endpoint,
}


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ClientConfig:
    """Read the configuration from a YAML file, a dict, or nothing but the environment.

    *source* None reads the file named by ``LLMPOOL_CONFIG`` when set.
    *overrides* maps dotted keys (``"connection_pool.max_connections"``) to
    values and wins over everything (the CLI's flags). Every error is a
    :class:`~llmpool.exceptions.ConfigError` naming the file, the key path
    and, for YAML, the line.
    """
    env = os.environ if environ is None else environ
    if source is None and env.get("LLMPOOL_CONFIG"):
        source = env["LLMPOOL_CONFIG"]
    data: dict[str, Any]
    lines: dict[str, int] = {}
    path: str | None = None
    if source is None:
        data = {}
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = os.fspath(source)
        data, lines = read_yaml(path)
    layers = _Layers(path, lines)
    _check_sections(data, layers)
    secrets_in_file = _secret_keys(data)
    for var, key in ENV_VARS.items():
        if var in env:
            _set(data, key, _from_env(var, key, env[var]))
            layers.origin[key] = f"environment variable {var}"
    for key, value in (overrides or {}).items():
        _set(data, key, value)
        layers.origin[key] = "an explicit argument"
    config = _build(data, layers)
    config = _resolve_api_key(config, env)
    config = _resolve_endpoint_keys(config, env, layers)
    if path is not None:
        _warn_if_secret_readable(path, secrets_in_file)
    return config


class _Layers:
    """Where each key came from, for error messages."""

    def __init__(self, path: str | None, lines: dict[str, int]) -> None:
        self.path = path
        self.lines = lines
        self.origin: dict[str, str] = {}

    def error(self, message: str, key: str, value: Any = None) -> ConfigError:
        origin = self.origin.get(key)
        if origin is not None:
            return ConfigError(f"{message} (from {origin})", key=key, value=value)
        line = self.lines.get(key)
        if line is None:  # the key's section, at least
            line = self.lines.get(key.rsplit(".", 1)[0]) if "." in key else None
        return ConfigError(message, key=key, value=value, file=self.path, line=line)


def _check_sections(data: dict[str, Any], layers: _Layers) -> None:
    for section, value in data.items():
        if section not in _SECTIONS:
            raise layers.error(_unknown(section, _SECTIONS), section)
        if section == "endpoints":
            if value is not None and not isinstance(value, list):
                raise layers.error("endpoints must be a list of endpoints", section, value)
        elif value is not None and not isinstance(value, dict):
            raise layers.error(f"section {section} must be a mapping", section, value)


def _unknown(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"unknown key {name!r}{hint}"


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _from_env(var: str, key: str, raw: str) -> Any:
    if key in ("plugins.names", "plugins.plugin_dirs"):
        sep = "," if key == "plugins.names" else os.pathsep
        return [p.strip() for p in raw.split(sep) if p.strip()]
    field = key.rsplit(".", 1)[1]
    if field in ("base_url", "api_key", "provider", "transport", "url"):
        return raw
    where: dict[str, Any] = {"key": key, "value": raw, "file": f"environment {var}"}
    if key in _INT_ENV_KEYS:
        try:
            return int(raw.strip(), 10)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, got {raw!r}", **where) from None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {raw!r}", **where) from None


#: Environment keys read as integers ("1e9" or "20.0" is refused, not rounded).
_INT_ENV_KEYS = frozenset(
    {
        "client.retry.max_attempts",
        "connection_pool.max_connections",
        "connection_pool.max_keepalive",
    }
)


def _build(data: dict[str, Any], layers: _Layers) -> ClientConfig:
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name == "endpoints":
            sections[name] = _endpoints(data.get(name) or [], layers)
            continue
        values = dict(data.get(name) or {})
        if name == "memory" and name not in data:
            continue
        if name == "routing" and "health" in values:
            values["health"] = _section(
                "routing.health", HealthConfig, values["health"] or {}, layers
            )
        if name == "client" and "retry" in values:
            values["retry"] = _section("client.retry", RetryPolicy, values["retry"] or {}, layers)
        sections[name] = _section(name, cls, values, layers)
    return ClientConfig(**sections, source=layers.path)


def _endpoints(items: list[Any], layers: _Layers) -> tuple[Endpoint, ...]:
    """The ``endpoints`` list: each item an Endpoint, its key from the environment."""
    endpoints = []
    for index, item in enumerate(items):
        where = f"endpoints[{index}]"
        if isinstance(item, dict) and "api_key" in item:
            raise layers.error(
                "an API key never goes in the configuration: put it in an environment "
                "variable and name that variable with api_key_env",
                f"{where}.api_key",
            )
        endpoints.append(_section(where, Endpoint, item, layers))
    try:
        return check_endpoints(endpoints) if endpoints else ()
    except ConfigError as exc:
        raise layers.error(exc.message, "endpoints") from None


def _section(name: str, cls: Any, values: Any, layers: _Layers) -> Any:
    if not isinstance(values, dict):
        raise layers.error(f"{name} must be a mapping", name, values)
    fields = {f.name for f in attrs.fields(cls)}
    for key in values:
        if key not in fields:
            raise layers.error(_unknown(str(key), fields), f"{name}.{key}")
    try:
        return cls(**values)
    except ConfigError as exc:
        key = f"{name}.{exc.key}" if exc.key else name
        raise layers.error(exc.message, key, exc._context.get("value")) from None
    except (TypeError, ValueError) as exc:
        raise layers.error(str(exc), name) from None


def _resolve_api_key(config: ClientConfig, env: Mapping[str, str]) -> ClientConfig:
    client = config.client
    if client.api_key:
        return config
    var = client.api_key_env or PROVIDER_KEY_VARS.get(client.provider)
    if var and env.get(var):
        return attrs.evolve(config, client=attrs.evolve(client, api_key=env[var]))
    return config


def _resolve_endpoint_keys(
    config: ClientConfig, env: Mapping[str, str], layers: _Layers
) -> ClientConfig:
    """Each endpoint's key from the variable its api_key_env names (which must be set)."""
    if not any(e.api_key_env for e in config.endpoints):
        return config
    endpoints = []
    for index, endpoint in enumerate(config.endpoints):
        var = endpoint.api_key_env
        if var is not None:
            if not env.get(var):
                raise layers.error(
                    f"endpoint {endpoint.name!r}: the environment variable {var} "
                    "named by api_key_env is not set",
                    f"endpoints[{index}].api_key_env",
                    var,
                )
            endpoint = attrs.evolve(endpoint, api_key=env[var])  # noqa: PLW2901
        endpoints.append(endpoint)
    return attrs.evolve(config, endpoints=tuple(endpoints))


def _secret_keys(data: Mapping[str, Any]) -> list[str]:
    """The dotted keys of *data* that hold a credential (for the warning below)."""
    found: list[str] = []
    client = data.get("client")
    if isinstance(client, dict):
        if client.get("api_key"):
            found.append("client.api_key")
        if holds_credentials(client.get("base_url")):
            found.append("client.base_url")
        headers = client.get("default_headers")
        if isinstance(headers, dict):
            found += [
                f"client.default_headers.{name}"
                for name in headers
                if isinstance(name, str) and is_secret_header(name)
            ]
    pool = data.get("connection_pool")
    if isinstance(pool, dict) and holds_credentials(pool.get("proxy_url")):
        found.append("connection_pool.proxy_url")
    state = data.get("state")
    if isinstance(state, dict) and holds_credentials(state.get("url")):
        found.append("state.url")
    return found


def _warn_if_secret_readable(path: str, secret_keys: list[str]) -> None:
    if not secret_keys:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s holds a credential (%s) and is readable by other users (mode %o): "
            "chmod 600 it, or use client.api_key_env",
            path,
            ", ".join(secret_keys),
            stat.S_IMODE(mode),
        )
