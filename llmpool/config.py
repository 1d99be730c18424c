"""Configuration values: frozen attrs classes, validated on construction.

:func:`llmpool.load_config` (in :mod:`llmpool.config_loading`) builds them
from YAML, a dict and the environment; this module imports nothing of it.

Every value here is immutable and safe to share between threads. Change one
with :func:`attrs.evolve`, which validates again. A bad value raises
:class:`~llmpool.exceptions.ConfigError` naming the field and the value (and,
from a file, the file, the key path and the line).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from llmpool.endpoints.model import Endpoint, RoutingConfig
from llmpool.exceptions import ConfigError
from llmpool.options import OPTION_NAMES, ClientOptions
from llmpool.redaction import mask, mask_headers, redact_url
from llmpool.state.config import StateConfig
from llmpool.validators import (
    MAX_CONNECTIONS,
    MAX_ENTRIES,
    SECRET,
    boolean,
    fraction,
    headers,
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
    "ClientConfig",
    "ClientSettings",
    "MemoryConfig",
    "PluginsConfig",
    "PoolConfig",
    "config_from_keywords",
]

log = logging.getLogger(__name__)

_Config = TypeVar("_Config", "PoolConfig", "MemoryConfig")


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


def _endpoint_tuple(value: Any) -> tuple[Endpoint, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Everything a :class:`~llmpool.Client` is built from. Immutable.

    Build one with :func:`llmpool.load_config`; ``Client.from_config`` uses it.
    """

    client: ClientSettings = attrs.field(factory=ClientSettings)
    connection_pool: PoolConfig = attrs.field(factory=PoolConfig)
    memory: MemoryConfig | None = None
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    #: Where rate limits, cached answers and cool-downs live (llmpool.state).
    state: StateConfig = attrs.field(factory=StateConfig)
    #: An endpoint group (instead of ``client.base_url``); keys come from api_key_env.
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoint_tuple)
    #: How the group routes, its health rules and fallbacks.
    routing: RoutingConfig = attrs.field(factory=RoutingConfig)
    #: The file it came from (None for a dict or defaults).
    source: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~llmpool.Client`."""
        c = self.client
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
            "state": self.state,
            "transport": c.transport,
            **attrs.asdict(c.options(), recurse=False),
            **self._group_kwargs(),
        }

    def _group_kwargs(self) -> dict[str, Any]:
        if not self.endpoints:
            return {}
        routing = self.routing
        return {
            "endpoints": list(self.endpoints),
            "routing": routing.strategy,
            "health": routing.health,
            "fallbacks": routing.fallbacks,
            "context_window_fallbacks": routing.context_window_fallbacks,
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
            if out["state"]["url"]:
                out["state"]["url"] = redact_url(out["state"]["url"])
            client["default_headers"] = mask_headers(client["default_headers"], secret_headers)
            for endpoint in out["endpoints"]:
                if endpoint["api_key"]:
                    endpoint["api_key"] = mask(endpoint["api_key"])
        return out


# --------------------------------------------------------------------------- keywords


def config_from_keywords(
    cls: type[_Config], config: _Config | None, keywords: Mapping[str, Any], *, owner: str
) -> _Config:
    """The configuration value a constructor was given, as a config object or
    as keywords: ``ConnectionPool(PoolConfig(max_connections=10))`` and the
    original design's ``ConnectionPool(max_connections=10)`` build the same
    value with the same class, so the same validators run.

    Both at once, an unknown keyword, or a *config* of another class is a
    :class:`~llmpool.exceptions.ConfigError` naming the key. *owner* names the
    constructor in the messages.
    """
    if config is not None and not isinstance(config, cls):
        raise ConfigError(
            f"{owner}() takes a {cls.__name__}, got {type(config).__name__}", key="config"
        )
    names = sorted(keywords)
    if config is not None and names:
        raise ConfigError(
            f"{owner}() takes a {cls.__name__} or keyword arguments, not both "
            f"(got a {cls.__name__} and {', '.join(names)}): put every setting in "
            f"one of them, e.g. attrs.evolve(config, {names[0]}=...)",
            key=names[0],
        )
    if config is not None:
        return config
    known = {field.alias for field in attrs.fields(cls) if field.init}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"{owner}() got an unknown keyword {unknown[0]!r}; "
            f"{cls.__name__} fields are: {', '.join(sorted(known))}",
            key=unknown[0],
        )
    return cls(**keywords)
