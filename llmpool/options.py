"""The client's own options, checked in one place.

:func:`check_option` is used by ``Client()``, ``Client.with_options()`` and
each call's per-call values, so an option is refused the same way wherever it
is given: a :class:`~llmpool.exceptions.ConfigError` naming it.
:func:`parse_base_url` turns a ``base_url`` into what requests are built from.

Pure functions; thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from llmpool.config import MAX_SECONDS
from llmpool.exceptions import ConfigError
from llmpool.redaction import redact_url
from llmpool.retry import RetryPolicy

__all__ = ["OPTION_NAMES", "check_option", "parse_base_url"]


def _seconds(name: str, value: Any) -> float | None:
    """None, or a finite number of seconds > 0."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
        or value > MAX_SECONDS
    ):
        raise ConfigError(
            f"{name} must be a number of seconds > 0 and <= {MAX_SECONDS}, or None, got {value!r}",
            key=name,
            value=value,
        )
    return float(value)


def _byte_count(name: str, value: Any, *, optional: bool = False) -> int | None:
    """A whole number > 0 (or None when *optional*)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "an int > 0" + (" or None" if optional else "")
        raise ConfigError(f"{name} must be {allowed}, got {value!r}", key=name, value=value)
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}", key=name, value=value)
    return value


def _policy(name: str, value: Any) -> RetryPolicy:
    if not isinstance(value, RetryPolicy):
        raise ConfigError(
            f"{name} must be a llmpool.RetryPolicy, got {type(value).__name__}", key=name
        )
    return value


#: How each client option is checked (construction, with_options and per call).
_OPTION_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "timeout": _seconds,
    "deadline": _seconds,
    "max_response_bytes": _byte_count,
    "max_stream_text": lambda name, value: _byte_count(name, value, optional=True),
    "follow_redirects": _flag,
    "retry": _policy,
}


def check_option(name: str, value: Any) -> Any:
    """*value* checked as client option *name*; ConfigError naming it otherwise."""
    return _OPTION_CHECKS[name](name, value)


def parse_base_url(base_url: Any) -> tuple[str, str, str]:
    """``(base_url, prefix, query)``: the URL as shown (scheme in lower case, no
    trailing slash), what request paths are appended to, and a query string
    that every request keeps (``?api-version=...``).

    Refuses what cannot work: not http(s), no host, a bad port, a fragment,
    and credentials in the URL (they would be shown in every error and
    repr, and an API key header is the way to authenticate; use
    ``default_headers`` for Basic auth). The error never shows a password.
    """
    if not isinstance(base_url, str):
        raise ConfigError(
            f"base_url must be an http(s) URL string, got {type(base_url).__name__}",
            key="base_url",
        )
    shown = redact_url(base_url)

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"base_url {shown!r} {why}", key="base_url")

    try:
        parts = urlsplit(base_url.strip())
        port = parts.port
    except ValueError:
        raise refuse("has an invalid host or port") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse("must start with http:// or https://")
    if not parts.hostname:
        raise refuse("has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse(
            "holds credentials (user:password@): pass api_key, or an Authorization "
            "header in default_headers"
        )
    if parts.fragment or base_url.rstrip().endswith("#"):
        raise refuse("has a #fragment, which HTTP never sends")
    if port == 0:
        raise refuse("has port 0")
    prefix = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    shown_url = prefix + (f"?{parts.query}" if parts.query else "")
    return shown_url, prefix, parts.query


#: The options ``Client.with_options()`` may change.
OPTION_NAMES = frozenset(_OPTION_CHECKS)
