"""Providers: the API dialects, found through the ``llmpool.providers`` entry points.

:func:`load_provider` builds one by name through stevedore; a third party
adds a provider by declaring an entry point in that group, nothing else. The
built-in ``openai`` and ``anthropic`` modules are imported only when loaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

from llmpool.exceptions import ConfigError, LLMPoolError
from llmpool.providers.base import Provider, StreamParser

__all__ = ["NAMESPACE", "Provider", "StreamParser", "available_providers", "load_provider"]

log = logging.getLogger(__name__)

#: The entry-point group providers are registered in.
NAMESPACE = "llmpool.providers"


def available_providers() -> tuple[str, ...]:
    """The names of the installed providers, sorted, read from the package
    metadata without importing any of them."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=NAMESPACE)}
    return tuple(sorted(names))


def load_provider(provider: str | Provider | type[Provider], **kwargs: Any) -> Provider:
    """A provider instance built with *kwargs* (``api_key``, ``default_headers``
    and the provider's own options).

    *provider* is an entry-point name in ``llmpool.providers``, a
    :class:`Provider` subclass (instantiated with *kwargs*) or an instance
    (returned as is; *kwargs* must then be empty). An unknown name raises
    :class:`~llmpool.exceptions.ConfigError` listing the installed names; a
    provider that fails to import raises ConfigError with the failure as its
    cause. Nothing is cached: each call builds a new instance.
    """
    if isinstance(provider, Provider):
        if kwargs:
            raise ConfigError(
                "provider options cannot be applied to a provider instance: "
                f"{', '.join(sorted(kwargs))}",
                key="provider",
            )
        return provider
    if isinstance(provider, type) and issubclass(provider, Provider):
        return provider(**kwargs)
    if not isinstance(provider, str) or not provider:
        raise ConfigError(
            f"provider must be a name, a Provider subclass or instance, got {provider!r}",
            key="provider",
            value=provider,
        )
    installed = available_providers()
    if provider not in installed:
        raise ConfigError(
            f"unknown provider {provider!r}; installed providers: "
            f"{', '.join(installed) or '(none)'}",
            key="provider",
            value=provider,
        )
    return _load_entry_point(provider, kwargs)


def _load_entry_point(name: str, kwargs: dict[str, Any]) -> Provider:
    from stevedore import driver
    from stevedore.exception import MultipleMatches, NoMatches

    def failed(_manager: Any, _entry_point: Any, exc: BaseException) -> None:
        if isinstance(exc, LLMPoolError):
            raise exc  # the provider's own ConfigError (a bad option): keep it
        raise ConfigError(
            f"provider {name!r} could not be loaded: {type(exc).__name__}: {exc}",
            key="provider",
            value=name,
        ) from exc

    try:
        manager: driver.DriverManager[Provider] = driver.DriverManager(
            namespace=NAMESPACE,
            name=name,
            invoke_on_load=True,
            invoke_kwds=kwargs,
            on_load_failure_callback=failed,
        )
    except (NoMatches, MultipleMatches) as exc:
        raise ConfigError(
            f"provider {name!r} could not be loaded: {exc}", key="provider", value=name
        ) from exc
    instance = manager.driver
    if not isinstance(instance, Provider):
        raise ConfigError(
            f"provider {name!r} is a {type(instance).__name__}, not an llmpool Provider",
            key="provider",
            value=name,
        )
    log.debug("loaded provider %s (%s)", name, type(instance).__name__)
    return instance
