"""The values of an endpoint group: :class:`Endpoint` and :class:`HealthConfig`.

Frozen attrs values, validated on construction (a bad value raises
:class:`~llmpool.exceptions.ConfigError` naming the field); immutable, share
freely between threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.validators import (
    MAX_CONNECTIONS,
    SECRET,
    boolean,
    fraction,
    int_between,
    optional,
    positive_number,
    seconds,
    url_repr,
)

__all__ = [
    "Endpoint",
    "HealthConfig",
    "RoutingConfig",
    "check_endpoints",
    "check_fallbacks",
]


def _name(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 100 or not value.isprintable():
        raise ConfigError(
            f"{attribute.name} must be a printable name of 1 to 100 characters, got {value!r}",
            key=attribute.name,
            value=value,
        )


def _models(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return value  # type: ignore[no-any-return]  # the validator names the problem


def _model_names(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(m, str) and m for m in value):
        raise ConfigError(
            f"{attribute.name} must be a list of model names, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class Endpoint:
    """One deployment a client may send a call to. Immutable; share freely.

    *models* lists the models it serves (empty: every model). *api_key*, when
    None, is read from the environment variable *api_key_env* when the client
    is built (or the provider's own variable, as for a plain client). With
    *max_connections* the endpoint gets its own pool with that cap;
    otherwise it shares the client's pool (whose cap is per host).
    *rpm* and *tpm* are hints for reports and routing, not enforced (the
    ``ratelimit`` plugin enforces limits).
    """

    #: A unique name, used in statistics, logs and errors.
    name: str = attrs.field(validator=_name)
    #: Where its API lives (``http://10.0.0.5:8000/v1``); no credentials in it.
    base_url: str = attrs.field(validator=attrs.validators.instance_of(str), repr=url_repr)
    #: The provider that shapes its requests (``openai``, ``anthropic``, ...).
    provider: str = attrs.field(default="openai", validator=_name)
    #: Its API key (never shown); None: from *api_key_env* or the provider's variable.
    api_key: str | None = attrs.field(default=None, repr=False, metadata=SECRET)
    #: The environment variable holding its API key.
    api_key_env: str | None = attrs.field(default=None, validator=optional(_name))
    #: Its share of traffic under weighted round-robin.
    weight: float = attrs.field(default=1.0, validator=positive_number)
    #: The models it serves (empty: all).
    models: tuple[str, ...] = attrs.field(default=(), converter=_models, validator=_model_names)
    #: Its own connection cap (None: share the client's pool).
    max_connections: int | None = attrs.field(
        default=None, validator=optional(int_between(1, MAX_CONNECTIONS))
    )
    #: Requests per minute it allows (a hint).
    rpm: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Tokens per minute it allows (a hint).
    tpm: float | None = attrs.field(default=None, validator=optional(positive_number))

    def serves(self, model: str | None) -> bool:
        """Whether a call for *model* may go here (None: a call without a model)."""
        return model is None or not self.models or model in self.models

    def resolve_api_key(self) -> str | None:
        """The API key: given, else from *api_key_env* (which must then be set)."""
        if self.api_key is not None or self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"endpoint {self.name!r}: the environment variable {self.api_key_env} "
                "named by api_key_env is not set",
                key="api_key_env",
                value=self.api_key_env,
            )
        return value


@attrs.frozen(kw_only=True)
class HealthConfig:
    """When an endpoint cools down and for how long. Immutable; share freely.

    An endpoint cools down when, over the last *window* seconds (with at
    least *min_calls* outcomes), the share of failures reaches
    *failure_rate*, or after *consecutive_failures* connection failures in a
    row. The n-th cool-down in a row lasts ``cooldown * 2**(n-1)`` seconds, at
    most *max_cooldown*; a ``Retry-After`` on a 429 or 503 sets at least that
    long. After a cool-down one probe call decides: success makes the
    endpoint healthy (and resets the growth), failure cools it down again.
    *check_interval* enables active checks (``GET /models`` on every endpoint
    from one background thread); None (the default) disables them.
    """

    window: float = attrs.field(default=30.0, validator=seconds())
    min_calls: int = attrs.field(default=5, validator=int_between(1, 100_000))
    failure_rate: float = attrs.field(default=0.5, validator=fraction)
    consecutive_failures: int = attrs.field(default=3, validator=int_between(1, 1000))
    cooldown: float = attrs.field(default=5.0, validator=seconds())
    max_cooldown: float = attrs.field(default=300.0, validator=seconds())
    #: Weight of the newest sample in the latency average (0 < alpha <= 1).
    latency_alpha: float = attrs.field(default=0.2, validator=fraction)
    check_interval: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: Wait for a cooling endpoint when every candidate is cooling (within the deadline).
    wait_for_recovery: bool = attrs.field(default=True, validator=boolean)


def _strategy_name(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    from llmpool.endpoints.routing import ROUTING

    if value not in ROUTING:
        raise ConfigError(
            f"{attribute.name} must be one of {sorted(ROUTING)}, got {value!r}",
            key=attribute.name,
            value=value,
        )


def _health(value: Any) -> Any:
    return HealthConfig(**value) if isinstance(value, Mapping) else value


def _fallbacks(value: Any) -> Any:
    try:
        return check_fallbacks(value, "fallbacks")
    except ConfigError:
        return value  # the validator names the key


def _fallback_map(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_fallbacks(value, attribute.name)


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """The ``routing`` section of the configuration: how a client over an
    endpoint group routes, when endpoints cool down, and the fallbacks.
    Immutable; share freely."""

    #: One of the strategies of :mod:`llmpool.endpoints.routing`.
    strategy: str = attrs.field(default="default", validator=_strategy_name)
    health: HealthConfig = attrs.field(
        factory=HealthConfig,
        converter=_health,
        validator=attrs.validators.instance_of(HealthConfig),
    )
    #: ``{model: [other models...]}`` tried after the model's endpoints are exhausted.
    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_fallbacks, validator=_fallback_map
    )
    #: ``{model: [models with a larger context window...]}`` after "prompt too long".
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_fallbacks, validator=_fallback_map
    )


def check_endpoints(endpoints: Iterable[Any]) -> tuple[Endpoint, ...]:
    """*endpoints* as Endpoint values (mappings are converted): at least one,
    names unique."""
    result: list[Endpoint] = []
    for index, item in enumerate(endpoints):
        value = item
        if isinstance(item, Mapping):
            try:
                value = Endpoint(**item)
            except TypeError as err:
                raise ConfigError(
                    f"endpoints[{index}]: {err}", key=f"endpoints[{index}]", value=None
                ) from None
        if not isinstance(value, Endpoint):
            raise ConfigError(
                f"endpoints[{index}] must be a llmpool.Endpoint or a mapping, "
                f"got {type(item).__name__}",
                key=f"endpoints[{index}]",
            )
        result.append(value)
    if not result:
        raise ConfigError("endpoints must hold at least one endpoint", key="endpoints")
    names = [e.name for e in result]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"endpoint names must be unique; repeated: {duplicates}", key="endpoints.name"
        )
    return tuple(result)


def check_fallbacks(value: Any, key: str) -> dict[str, tuple[str, ...]]:
    """A ``{model: [other models...]}`` mapping, checked."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must map a model to a list of models", key=key)
    result: dict[str, tuple[str, ...]] = {}
    for model, given in value.items():
        others = (given,) if isinstance(given, str) else given
        if (
            not isinstance(model, str)
            or not isinstance(others, Iterable)
            or not all(isinstance(o, str) and o for o in others)
        ):
            raise ConfigError(
                f"{key}[{model!r}] must be a list of model names", key=f"{key}.{model}"
            )
        result[model] = tuple(others)
    return result
