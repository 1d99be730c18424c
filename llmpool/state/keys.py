"""Key material for shared state: credential scopes, safe key parts, cache digests.

Nothing secret and no prompt text ever appears in a key: credentials and
payloads enter only through SHA-256. Pure functions; thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from llmpool.redaction import is_secret_header

__all__ = ["CredentialScopes", "cache_digest", "credential_scope", "key_part"]

#: Characters a key part keeps as they are (anything else is hashed).
_SAFE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")


def credential_scope(headers: Mapping[str, str], base_url: str | None = None) -> str:
    """A short digest of who is calling whom: the base URL and every header
    that holds a credential (``Authorization``, ``x-api-key``...). Two API
    keys give two scopes; the key itself cannot be read back from it."""
    h = hashlib.sha256((base_url or "").encode())
    for name in sorted(n.lower() for n in headers if is_secret_header(n)):
        value = next(v for k, v in headers.items() if k.lower() == name)
        h.update(b"\0" + name.encode("latin-1") + b"\0" + value.encode("latin-1"))
    return h.hexdigest()[:24]


class CredentialScopes:
    """:func:`credential_scope` remembered: which headers hold credentials,
    per tuple of header names, and each scope, per base URL and credential
    values. A request's other headers (its Idempotency-Key above all) change
    with every call and would defeat a cache keyed by all headers.

    Holds credential values in memory only as the requests themselves do;
    each table is emptied when it reaches *size* entries. Thread-safe:
    plain dict reads and writes under the GIL (two threads may compute the
    same entry)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._secret: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._scopes: dict[tuple[str | None, tuple[str, ...]], str] = {}

    def __call__(self, headers: Mapping[str, str], base_url: str | None = None) -> str:
        names = tuple(headers)
        secret = self._secret.get(names)
        if secret is None:
            if len(self._secret) >= self.size:
                self._secret = {}
            secret = self._secret[names] = tuple(n for n in names if is_secret_header(n))
        key = (base_url, tuple(headers[n] for n in secret))
        scope = self._scopes.get(key)
        if scope is None:
            if len(self._scopes) >= self.size:
                self._scopes = {}
            scope = self._scopes[key] = credential_scope(headers, base_url)
        return scope


def key_part(text: str) -> str:
    """*text* as it may appear in a key: itself when short and plain (a model
    name), else a digest (anything a person could not read safely)."""
    if _SAFE.fullmatch(text):
        return text
    return "h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def cache_digest(provider: str, scope: str, path: str, payload: Mapping[str, Any] | None) -> str:
    """SHA-256 of everything that changes an answer: the provider, the
    credential scope, the path and the canonical JSON payload (model and
    parameters included; key order does not matter)."""
    body = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    text = f"{provider}\n{scope}\n{path}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
