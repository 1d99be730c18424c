"""attrs validators and bounds shared by every configuration value.

Each validator raises :class:`~llmpool.exceptions.ConfigError` naming the
field (and never showing a value marked :data:`SECRET`). A value module:
it imports nothing of llmpool but the exceptions and the redaction helpers,
so config, retry, options and the plugins can all use it without a cycle.

Pure functions; thread-safe.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.redaction import check_headers, redact_url

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_ENTRIES",
    "MAX_SECONDS",
    "SECRET",
    "TRANSPORTS",
    "boolean",
    "fail",
    "fraction",
    "headers",
    "hysteresis",
    "int_between",
    "is_number",
    "known_transport",
    "no_headers",
    "non_negative_int",
    "non_negative_number",
    "optional",
    "optional_str",
    "positive_int",
    "positive_number",
    "seconds",
    "url_repr",
]

#: Field metadata marking a value that is never shown, not even in an error.
SECRET = {"secret": True}


def fail(attribute: attrs.Attribute[Any], value: Any, expected: str) -> ConfigError:
    if attribute.metadata.get("secret"):
        return ConfigError(
            f"{attribute.name} must be {expected}, got a value of type {type(value).__name__} "
            "(the value is not shown: it is a secret)",
            key=attribute.name,
        )
    return ConfigError(
        f"{attribute.name} must be {expected}, got {value!r}", key=attribute.name, value=value
    )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def url_repr(value: Any) -> str:
    """repr of a URL with its user, password and credential parameters masked."""
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


def holds_credentials(url: Any) -> bool:
    return isinstance(url, str) and redact_url(url) != url


def positive_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise fail(attribute, value, "an integer >= 1")


def non_negative_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: an int >= 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(attribute, value, "an integer >= 0")


def positive_number(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number > 0."""
    if not is_number(value) or value <= 0:
        raise fail(attribute, value, "a number > 0")


def non_negative_number(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number >= 0."""
    if not is_number(value) or value < 0:
        raise fail(attribute, value, "a number >= 0")


#: The most connections per host (and host pools) a pool may keep: beyond it
#: a pool is a mistake (``1e9`` from a typo hung the first call).
MAX_CONNECTIONS = 10_000

#: The longest duration any setting may name (one day): every wait fits in a
#: socket timeout and ``threading.Event.wait``, and no call should wait longer.
MAX_SECONDS = 86_400

#: The most entries a bounded history or table may be given.
MAX_ENTRIES = 100_000


def int_between(low: int, high: int) -> Any:
    """Validator: an int in [*low*, *high*] (never a bool)."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(attribute, value, f"an integer from {low} to {high}")

    return check


def seconds(*, zero: bool = False) -> Any:
    """Validator: a finite number of seconds, > 0 (>= 0 with *zero*), at most MAX_SECONDS."""
    expected = f"a number of seconds {'>= 0' if zero else '> 0'} and <= {MAX_SECONDS}"

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not is_number(value) or value > MAX_SECONDS or value < 0 or (value == 0 and not zero):
            raise fail(attribute, value, expected)

    return check


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
    if not is_number(value) or not 0 < value <= 1:
        raise fail(attribute, value, "a fraction in (0, 1]")


def hysteresis(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not is_number(value) or not 0 <= value < 1:
        raise fail(attribute, value, "a fraction in [0, 1)")


def boolean(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: exactly True or False."""
    if not isinstance(value, bool):
        raise fail(attribute, value, "true or false")


def optional_str(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: None or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise fail(attribute, value, "a non-empty string")


#: The names a client's ``transport`` may take.
TRANSPORTS = ("urllib3", "requests")


def known_transport(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in TRANSPORTS:
        raise fail(attribute, value, "'urllib3' or 'requests'")


def no_headers(value: Any) -> Any:
    return {} if value is None else value


def headers(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a mapping of header names to values the provider can send
    (the same check the provider runs, so a file and a client refuse alike)."""
    check_headers(value, key=attribute.name)
