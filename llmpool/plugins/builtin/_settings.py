"""Reading a built-in plugin's settings into a frozen attrs value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

from llmpool.exceptions import ConfigError

__all__ = ["read_settings"]

T = TypeVar("T", bound=AttrsInstance)


def read_settings(cls: type[T], plugin: str, settings: Mapping[str, Any]) -> T:
    """Build *cls* (an attrs class) from *settings*, naming the plugin in errors.

    An unknown key is an error too: a misspelt setting never silently falls
    back to its default.
    """
    known = [field.name for field in attrs.fields(cls)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(
            f"plugin {plugin!r} has no setting {unknown[0]!r} (known: {', '.join(known)})",
            key=f"plugins.{plugin}.{unknown[0]}",
            value=settings[unknown[0]],
        )
    try:
        return cls(**settings)
    except ConfigError as exc:
        raise ConfigError(
            f"plugin {plugin!r}: {exc.message}",
            key=f"plugins.{plugin}.{exc.key}",
            value=getattr(exc, "value", None),
        ) from exc
