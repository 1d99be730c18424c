"""Secrets in headers and URLs: which headers hold credentials, what a header
value may contain, and how secrets are masked in every text llmpool writes.

One list of secret header names serves the whole package: redirects strip
them, configuration output and logs mask them. A provider adds the headers it
declares secret (its key header, ``Provider.secret_headers``).

Pure functions over values; thread-safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from llmpool.exceptions import ConfigError

__all__ = [
    "SECRET_HEADERS",
    "check_header",
    "check_headers",
    "is_secret_header",
    "mask",
    "mask_headers",
    "redact_url",
]

#: Header names (lower case) that carry credentials: never sent to another
#: origin on a redirect, always masked in output.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
    }
)

#: Words that make any other header name count as secret when masking output.
_SECRET_WORDS = ("key", "token", "secret", "auth", "cookie", "password", "credential", "signature")

#: Names that hold a key-like word but no credential.
_NOT_SECRET = frozenset({"idempotency-key"})

#: Query parameters masked in a URL shown to a person.
_SECRET_PARAMS = re.compile(r"key|token|secret|sig|password|auth", re.IGNORECASE)

#: RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Control characters a header value must not hold (tab is allowed).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

MASK = "***"


def is_secret_header(name: str, declared: Iterable[str] = ()) -> bool:
    """Whether header *name* holds a credential: a known name, one the provider
    *declared*, or a name containing a word such as ``key`` or ``token``."""
    lower = name.lower()
    if lower in _NOT_SECRET:
        return False
    if lower in SECRET_HEADERS or lower in {d.lower() for d in declared}:
        return True
    return any(word in lower for word in _SECRET_WORDS)


def mask(value: object) -> str:
    """A secret shown to a person: the first three and last two characters of a
    long string, else ``***``."""
    if isinstance(value, str) and len(value) > 12:
        return value[:3] + "..." + value[-2:]
    return MASK


def mask_headers(headers: Mapping[str, object], declared: Iterable[str] = ()) -> dict[str, object]:
    """*headers* with every secret value replaced by ``***``."""
    declared = tuple(declared)
    return {k: (MASK if is_secret_header(k, declared) else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    """*url* fit to show: a password (and user) in it, and query parameters
    that look like credentials, become ``***``. Never raises."""
    if not isinstance(url, str):
        return MASK
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        query = parts.query
        if query and _SECRET_PARAMS.search(query):
            pairs = parse_qsl(query, keep_blank_values=True)
            query = "&".join(f"{k}={MASK if _SECRET_PARAMS.search(k) else v}" for k, v in pairs)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK


def check_header(name: object, value: object, *, key: str = "headers") -> None:
    """Raise :class:`~llmpool.exceptions.ConfigError` for a header that cannot be
    sent: a name that is not an HTTP token, a value that is not a string or
    holds CR, LF, NUL or another control character (a trailing newline read
    from a file or an environment variable is the common case), or one that is
    not Latin-1. The error names the header and *key*, never the value."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 64 else type(name).__name__
        raise ConfigError(f"{key}: {shown!r} is not a valid HTTP header name", key=key)
    if not isinstance(value, str):
        raise ConfigError(
            f"{key}: header {name!r} must be a string, got {type(value).__name__}", key=key
        )
    if _BAD_VALUE.search(value):
        raise ConfigError(
            f"{key}: header {name!r} holds a control character (CR, LF or NUL; "
            "often a trailing newline read from a file or environment variable)",
            key=key,
        )
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{key}: header {name!r} holds characters outside Latin-1", key=key
        ) from None


def check_headers(headers: object, *, key: str = "headers") -> None:
    """:func:`check_header` for every item of *headers*, which must be a mapping."""
    if not isinstance(headers, Mapping):
        raise ConfigError(
            f"{key} must map header names to string values, got {type(headers).__name__}",
            key=key,
        )
    for name, value in headers.items():
        check_header(name, value, key=key)
