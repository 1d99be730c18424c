"""The client's options, defined once.

:class:`ClientOptions` holds every option that shapes a call, with its
default and its check; the client, the configuration file's ``client``
section and ``with_options()`` all use it, so an option is refused the same
way wherever it is given (a :class:`~llmpool.exceptions.ConfigError` naming
it). :func:`parse_base_url` turns a ``base_url`` into what requests are built
from.

Values and pure functions; thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs

from llmpool.exceptions import ConfigError
from llmpool.redaction import redact_url
from llmpool.retry import RetryPolicy
from llmpool.validators import boolean, fail, optional, positive_int, seconds

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_STREAM_TEXT",
    "OPTION_NAMES",
    "ClientOptions",
    "check_option",
    "parse_base_url",
]


#: Default cap on a non-streamed response body, after decoding (bytes).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024

#: Default number of characters of a streamed answer kept for ``Stream.text``.
DEFAULT_MAX_STREAM_TEXT = 1 << 20


def _retry_policy(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, RetryPolicy):
        raise fail(attribute, value, "a llmpool.RetryPolicy")


@attrs.frozen(kw_only=True)
class ClientOptions:
    """How a client's calls behave: the one definition of each option and its
    default, used by :class:`~llmpool.Client`, by the ``client`` section of
    the configuration (:class:`~llmpool.config.ClientSettings` extends it)
    and by ``Client.with_options()`` (``attrs.evolve``, which validates
    again). Immutable; share freely between threads.

    A bad value raises :class:`~llmpool.exceptions.ConfigError` naming the
    option, wherever it is given.
    """

    #: Bounds each attempt's connect and each read, in seconds (None: the pool's).
    timeout: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: Bounds a whole call (hooks, waits, reads, retries), in seconds.
    deadline: float | None = attrs.field(default=None, validator=optional(seconds()))
    #: The retry policy (see :class:`~llmpool.RetryPolicy`).
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=_retry_policy)
    #: Cap on a non-streamed response body after decoding; larger raises ResponseTooLarge.
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=positive_int
    )
    #: Characters of a streamed answer kept for ``Stream.text`` (then a tail).
    max_stream_text: int | None = attrs.field(
        default=DEFAULT_MAX_STREAM_TEXT, validator=optional(positive_int)
    )
    #: Follow redirects (secrets never leave their origin).
    follow_redirects: bool = attrs.field(default=False, validator=boolean)


_FIELDS = attrs.fields_dict(ClientOptions)

#: The options ``Client.with_options()`` may change (besides ``default_headers``).
OPTION_NAMES = frozenset(_FIELDS)


def check_option(name: str, value: Any) -> Any:
    """*value* checked as option *name* (a per-call ``timeout`` or ``deadline``);
    ConfigError naming it otherwise."""
    field = _FIELDS[name]
    if field.validator is not None:
        field.validator(None, field, value)
    return value


def parse_base_url(
    base_url: Any, api_path: Callable[[str], str] | None = None
) -> tuple[str, str, str]:
    """``(base_url, prefix, query)``: the URL as shown (scheme in lower case, no
    trailing slash), what request paths are appended to, and a query string
    that every request keeps (``?api-version=...``). *api_path* (the
    provider's ``api_path``) may complete the URL's path, as Anthropic adds
    ``/v1`` to a base URL given without it.

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
    path = parts.path.rstrip("/")
    if api_path is not None:
        path = api_path(path)
    prefix = f"{scheme}://{parts.netloc}{path}"
    shown_url = prefix + (f"?{parts.query}" if parts.query else "")
    return shown_url, prefix, parts.query
