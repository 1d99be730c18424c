"""Configuration values: frozen attrs classes, validated on construction.

Every value here is immutable and safe to share between threads. Change one
with :func:`attrs.evolve`, which validates again. A bad value raises
:class:`~llmpool.exceptions.ConfigError` naming the field and the value.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from llmpool.exceptions import ConfigError

__all__ = ["MemoryConfig", "PoolConfig"]


# --------------------------------------------------------------------------- validators


def _fail(attribute: attrs.Attribute[Any], value: Any, expected: str) -> ConfigError:
    return ConfigError(
        f"{attribute.name} must be {expected}, got {value!r}", key=attribute.name, value=value
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(attribute, value, "an integer >= 1")


def non_negative_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: an int >= 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(attribute, value, "an integer >= 0")


def positive_number(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number > 0."""
    if not _is_number(value) or value <= 0:
        raise _fail(attribute, value, "a number > 0")


def non_negative_number(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number >= 0."""
    if not _is_number(value) or value < 0:
        raise _fail(attribute, value, "a number >= 0")


def optional(
    validator: Any,
) -> Any:
    """Validator: None, or what *validator* accepts."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return check


def fraction(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a number in (0, 1]."""
    if not _is_number(value) or not 0 < value <= 1:
        raise _fail(attribute, value, "a fraction in (0, 1]")


def boolean(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: exactly True or False."""
    if not isinstance(value, bool):
        raise _fail(attribute, value, "true or false")


def optional_str(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: None or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(attribute, value, "a non-empty string")


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
    max_connections: int = attrs.field(default=10, validator=positive_int)
    #: Idle connections kept per host; extra ones are closed when returned.
    max_keepalive: int = attrs.field(
        default=attrs.Factory(_default_keepalive, takes_self=True), validator=non_negative_int
    )
    #: The default for every timeout below (the seed's 30 s).
    timeout: float = attrs.field(default=30.0, validator=positive_number)
    #: Longest wait for a TCP (and TLS) connection to open.
    connect_timeout: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Longest silence while reading a response.
    read_timeout: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Longest wait for a free connection when all are busy; then PoolTimeout.
    pool_timeout: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: An idle connection older than this is closed on checkout, never reused.
    keepalive_expiry: float | None = attrs.field(default=60.0, validator=optional(positive_number))
    #: A connection older than this (since it opened) is closed on checkout.
    max_connection_age: float | None = attrs.field(
        default=None, validator=optional(positive_number)
    )
    #: SO_KEEPALIVE with the three settings below, so NATs keep long calls alive.
    tcp_keepalive: bool = attrs.field(default=True, validator=boolean)
    tcp_keepidle: int = attrs.field(default=60, validator=positive_int)
    tcp_keepintvl: int = attrs.field(default=60, validator=positive_int)
    tcp_keepcnt: int = attrs.field(default=5, validator=positive_int)
    #: Host pools kept; the least recently used is closed beyond this.
    max_hosts: int = attrs.field(default=16, validator=positive_int)
    #: Warn once per connection held longer than this (None: never).
    leak_timeout: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Threads expected to share the pool; a warning names a cap below it.
    expected_threads: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: Verify TLS certificates (keep it on; use ca_certs for a private CA).
    verify: bool = attrs.field(default=True, validator=boolean)
    #: A CA bundle file to trust instead of the system's.
    ca_certs: str | None = attrs.field(default=None, validator=optional_str)
    #: Client certificate and key files for mutual TLS.
    cert_file: str | None = attrs.field(default=None, validator=optional_str)
    key_file: str | None = attrs.field(default=None, validator=optional_str)
    #: An HTTP(S) proxy for every host (its credentials are never logged).
    proxy_url: str | None = attrs.field(default=None, validator=optional_str, repr=False)

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
    sample_interval: float = attrs.field(default=1.0, validator=positive_number)
    warn: float = attrs.field(default=0.70, validator=fraction)
    gc: float = attrs.field(default=0.80, validator=fraction)
    shed: float = attrs.field(default=0.90, validator=fraction)
    critical: float = attrs.field(default=0.95, validator=fraction)
    consecutive_samples: int = attrs.field(default=3, validator=positive_int)
    hysteresis: float = attrs.field(default=0.05, validator=non_negative_number)
    #: Minimum seconds between two garbage collections.
    gc_cooldown: float = attrs.field(default=30.0, validator=non_negative_number)
    #: Reject new calls with MemoryPressureError while in the shed state or above.
    reject_on_pressure: bool = attrs.field(default=False, validator=boolean)
    #: Samples kept for the report's window (bounded).
    history: int = attrs.field(default=300, validator=positive_int)
    #: Call glibc malloc_trim(0) after a collection (opt-in).
    trim_on_gc: bool = attrs.field(default=False, validator=boolean)
    #: Distinct operation keys accounted; further keys fold into "other".
    max_operations: int = attrs.field(default=256, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        if not self.warn <= self.gc <= self.shed <= self.critical:
            raise ConfigError(
                "thresholds must satisfy warn <= gc <= shed <= critical, got "
                f"{self.warn}, {self.gc}, {self.shed}, {self.critical}",
                key="warn",
                value=(self.warn, self.gc, self.shed, self.critical),
            )
