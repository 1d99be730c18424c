"""Configuration values (frozen attrs classes, validated on construction) and
:func:`load_config`, which builds them from YAML, a dict and the environment.

Every value here is immutable and safe to share between threads. Change one
with :func:`attrs.evolve`, which validates again. A bad value raises
:class:`~llmpool.exceptions.ConfigError` naming the field and the value (and,
from a file, the file, the key path and the line).
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.options import OPTION_NAMES, ClientOptions
from llmpool.redaction import is_secret_header, mask, mask_headers, redact_url
from llmpool.retry import RetryPolicy
from llmpool.validators import (
    MAX_CONNECTIONS,
    MAX_ENTRIES,
    SECRET,
    boolean,
    fraction,
    headers,
    holds_credentials,
    hysteresis,
    int_between,
    known_transport,
    no_headers,
    non_negative_int,
    optional,
    optional_str,
    positive_int,
    positive_number,
    seconds,
    url_repr,
)

__all__ = [
    "ENV_VARS",
    "ClientConfig",
    "ClientSettings",
    "MemoryConfig",
    "PluginsConfig",
    "PoolConfig",
    "load_config",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pool


def _default_keepalive(self: PoolConfig) -> int:
    return self.max_connections


@attrs.frozen(kw_only=True)
class PoolConfig:
    """How the connection pool behaves. Immutable; share freely between threads.

    Times are in seconds. ``connect_timeout``, ``read_timeout`` and
    ``pool_timeout`` fall back to ``timeout`` when left as None.
    """

    #: Connections per host, a real cap: a caller waits when all are busy.
    max_connections: int = attrs.field(default=10, validator=int_between(1, MAX_CONNECTIONS))
    #: Idle connections kept per host; extra ones are closed when returned.
    max_keepalive: int = attrs.field(
        default=attrs.Factory(_default_keepalive, takes_self=True), validator=non_negative_int
    )
    #: The default for every timeout below (the seed's 30 s).
    timeout: float = attrs.field(default=30.0, validator=seconds())
    #: Longest wait for a TCP (and TLS) connection to open.
    connect_timeout: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: Longest silence while reading a response.
    read_timeout: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: Longest wait for a free connection when all are busy; then PoolTimeout.
    pool_timeout: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: An idle connection older than this is closed on checkout, never reused.
    keepalive_expiry: float | None = attrs.field(default=60.0, validator=optional(seconds()))
    #: A connection older than this (since it opened) is closed on checkout.
    max_connection_age: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: SO_KEEPALIVE with the three settings below, so NATs keep long calls alive.
    tcp_keepalive: bool = attrs.field(default=True, validator=boolean)
    #: Linux refuses TCP_KEEPIDLE and TCP_KEEPINTVL above 32767, TCP_KEEPCNT above 127.
    tcp_keepidle: int = attrs.field(default=60, validator=int_between(1, 32767))
    tcp_keepintvl: int = attrs.field(default=60, validator=int_between(1, 32767))
    tcp_keepcnt: int = attrs.field(default=5, validator=int_between(1, 127))
    #: Host pools kept; the least recently used is closed beyond this.
    max_hosts: int = attrs.field(default=16, validator=int_between(1, MAX_CONNECTIONS))
    #: Warn once per connection held longer than this (None: never).
    leak_timeout: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: Threads expected to share the pool; a warning names a cap below it.
    expected_threads: int | None = attrs.field(
        default=None, validator=optional(int_between(1, MAX_ENTRIES))
    )
    #: Verify TLS certificates (keep it on; use ca_certs for a private CA).
    verify: bool = attrs.field(default=True, validator=boolean)
    #: A CA bundle file to trust instead of the system's.
    ca_certs: str | None = attrs.field(default=None, validator=optional_str)
    #: Client certificate and key files for mutual TLS.
    cert_file: str | None = attrs.field(default=None, validator=optional_str)
    key_file: str | None = attrs.field(default=None, validator=optional_str)
    #: An HTTP(S) proxy for every host (its credentials are never logged).
    proxy_url: str | None = attrs.field(
        default=None, validator=optional_str, repr=url_repr, metadata=SECRET
    )

    def __attrs_post_init__(self) -> None:
        if self.max_keepalive > self.max_connections:
            raise ConfigError(
                f"max_keepalive ({self.max_keepalive}) must not exceed max_connections "
                f"({self.max_connections})",
                key="max_keepalive",
                value=self.max_keepalive,
            )
        if self.key_file and not self.cert_file:
            raise ConfigError("key_file needs cert_file", key="key_file", value=self.key_file)

    @property
    def effective_connect_timeout(self) -> float:
        """``connect_timeout``, or ``timeout`` when unset."""
        return self.connect_timeout if self.connect_timeout is not None else self.timeout

    @property
    def effective_read_timeout(self) -> float:
        """``read_timeout``, or ``timeout`` when unset."""
        return self.read_timeout if self.read_timeout is not None else self.timeout

    @property
    def effective_pool_timeout(self) -> float:
        """``pool_timeout``, or ``timeout`` when unset."""
        return self.pool_timeout if self.pool_timeout is not None else self.timeout


# --------------------------------------------------------------------------- memory


@attrs.frozen(kw_only=True)
class MemoryConfig:
    """How the memory manager watches the process. Immutable; share freely.

    Thresholds are fractions of the budget (``max_memory_mb``). A state is
    entered after ``consecutive_samples`` samples at or above its threshold
    and left only when usage falls below the threshold minus ``hysteresis``.
    """

    #: The budget in MiB; None means the cgroup limit when one is set, else 512.
    max_memory_mb: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Seconds between samples.
    sample_interval: float = attrs.field(default=1.0, validator=seconds())
    warn: float = attrs.field(default=0.70, validator=fraction)
    gc: float = attrs.field(default=0.80, validator=fraction)
    shed: float = attrs.field(default=0.90, validator=fraction)
    critical: float = attrs.field(default=0.95, validator=fraction)
    consecutive_samples: int = attrs.field(default=3, validator=positive_int)
    #: A fraction of the budget in [0, 1).
    hysteresis: float = attrs.field(default=0.05, validator=hysteresis)
    #: Minimum seconds between two garbage collections.
    gc_cooldown: float = attrs.field(default=30.0, validator=seconds(zero=True))
    #: Reject new calls with MemoryPressureError while in the shed state or above.
    reject_on_pressure: bool = attrs.field(default=False, validator=boolean)
    #: Samples kept for the report's window (bounded).
    history: int = attrs.field(default=300, validator=int_between(1, MAX_ENTRIES))
    #: Call glibc malloc_trim(0) after a collection (opt-in).
    trim_on_gc: bool = attrs.field(default=False, validator=boolean)
    #: Distinct operation keys accounted; further keys fold into "other".
    max_operations: int = attrs.field(default=256, validator=int_between(1, MAX_ENTRIES))
    #: Seconds between repeated pressure callbacks while the state stays at
    #: shed or critical (None: call back only on entering a state).
    pressure_repeat: float | None = attrs.field(default=30.0, validator=optional(seconds()))

    def __attrs_post_init__(self) -> None:
        if not self.warn <= self.gc <= self.shed <= self.critical:
            raise ConfigError(
                "thresholds must satisfy warn <= gc <= shed <= critical, got "
                f"{self.warn}, {self.gc}, {self.shed}, {self.critical}",
                key="warn",
                value=(self.warn, self.gc, self.shed, self.critical),
            )


# --------------------------------------------------------------------------- client


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@attrs.frozen(kw_only=True)
class ClientSettings(ClientOptions):
    """The ``client`` section: where to send calls, and the call options of
    :class:`~llmpool.options.ClientOptions` (timeout, deadline, retry, size
    limits, redirects: defined there once, with their defaults)."""

    base_url: str | None = attrs.field(default=None, validator=optional_str, repr=url_repr)
    api_key: str | None = attrs.field(
        default=None, validator=optional_str, repr=False, metadata=SECRET
    )
    #: Read the API key from this environment variable.
    api_key_env: str | None = attrs.field(default=None, validator=optional_str)
    provider: str = attrs.field(default="openai", validator=optional_str)
    transport: str = attrs.field(default="urllib3", validator=known_transport)
    default_headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=no_headers, validator=headers, repr=False, metadata=SECRET
    )

    def options(self) -> ClientOptions:
        """The call options of this section, as the client takes them."""
        return ClientOptions(**{name: getattr(self, name) for name in OPTION_NAMES})


@attrs.frozen(kw_only=True)
class PluginsConfig:
    """The ``plugins`` section: which plugins to load and their settings."""

    names: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    settings: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    plugin_dirs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    strict: bool = attrs.field(default=False, validator=boolean)


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Everything a :class:`~llmpool.Client` is built from. Immutable.

    Build one with :func:`load_config`; ``Client.from_config`` uses it.
    """

    client: ClientSettings = attrs.field(factory=ClientSettings)
    connection_pool: PoolConfig = attrs.field(factory=PoolConfig)
    memory: MemoryConfig | None = None
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    #: The file it came from (None for a dict or defaults).
    source: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~llmpool.Client`."""
        c = self.client
        if not c.base_url:
            raise ConfigError(
                "client.base_url is required", key="client.base_url", file=self.source
            )
        return {
            "base_url": c.base_url,
            "api_key": c.api_key,
            "provider": c.provider,
            "pool": self.connection_pool,
            "default_headers": dict(c.default_headers) or None,
            "plugins": list(self.plugins.names),
            "plugin_settings": self.plugins.settings,
            "plugin_dirs": self.plugins.plugin_dirs,
            "plugins_strict": self.plugins.strict,
            "memory": self.memory,
            "transport": c.transport,
            **attrs.asdict(c.options(), recurse=False),
        }

    def to_dict(
        self, *, mask_secrets: bool = True, secret_headers: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked by default:
        the API key, every header that holds a credential (by name, see
        :func:`llmpool.redaction.is_secret_header`, plus *secret_headers*, the
        ones the provider declares), and the user, password and credential
        query parameters of ``base_url`` and ``proxy_url``."""
        out = attrs.asdict(self, recurse=True, filter=lambda a, _v: a.name != "source")
        client = out["client"]
        client["retry"] = attrs.asdict(self.client.retry)
        client["retry"]["retry_statuses"] = sorted(self.client.retry.retry_statuses)
        if mask_secrets:
            if client["api_key"]:
                client["api_key"] = mask(client["api_key"])
            if client["base_url"]:
                client["base_url"] = redact_url(client["base_url"])
            pool = out["connection_pool"]
            if pool.get("proxy_url"):
                pool["proxy_url"] = redact_url(pool["proxy_url"])
            client["default_headers"] = mask_headers(client["default_headers"], secret_headers)
        return out


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
}

#: The API key variable read for each provider when none is configured.
PROVIDER_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

_SECTIONS: dict[str, Any] = {
    "client": ClientSettings,
    "connection_pool": PoolConfig,
    "memory": MemoryConfig,
    "plugins": PluginsConfig,
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
        data, lines = _read_yaml(path)
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


#: How many nodes aliases may add to a YAML document beyond its own: a
#: configuration file has no use for more, and a "billion laughs" document
#: (aliases of aliases) would otherwise expand to billions.
MAX_ALIAS_NODES = 10_000


def _read_yaml(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc}", file=path) from exc
    loader: Any = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        _check_aliases(node, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "the document cannot be parsed"
        raise ConfigError(f"invalid YAML: {problem}", file=path, line=line) from exc
    except RecursionError:
        raise ConfigError("invalid YAML: the document is nested too deeply", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections", file=path, line=1)
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_aliases(root: Any, path: str) -> None:
    """Refuse a composed document whose aliases would expand it by more than
    MAX_ALIAS_NODES nodes, or that holds an alias inside its own anchor.
    Linear in the document's size: each distinct node is counted once."""
    distinct: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) not in distinct:
            distinct.add(id(node))
            todo.extend(_children(node))
    limit = len(distinct) + MAX_ALIAS_NODES
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def expanded(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in open_nodes:
            raise ConfigError(
                "invalid YAML: an alias refers to the node that contains it", file=path, line=line
            )
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += expanded(child)
            if total > limit:
                raise ConfigError(
                    f"invalid YAML: aliases expand the document by more than "
                    f"{MAX_ALIAS_NODES} nodes",
                    file=path,
                    line=line,
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded(root)


def _collect_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        lines[key] = key_node.start_mark.line + 1
        _collect_lines(value_node, key + ".", lines)


def _check_sections(data: dict[str, Any], layers: _Layers) -> None:
    for section, value in data.items():
        if section not in _SECTIONS:
            raise layers.error(_unknown(section, _SECTIONS), section)
        if value is not None and not isinstance(value, dict):
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
    if field in ("base_url", "api_key", "provider", "transport"):
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
        values = dict(data.get(name) or {})
        if name == "memory" and name not in data:
            continue
        if name == "client" and "retry" in values:
            values["retry"] = _section("client.retry", RetryPolicy, values["retry"] or {}, layers)
        sections[name] = _section(name, cls, values, layers)
    return ClientConfig(**sections, source=layers.path)


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
