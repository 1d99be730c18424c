"""A route: where an attempt goes and how it is shaped there.

A :class:`Route` ties an endpoint's name, its provider (headers, body shape,
parsing), its base URL and the transport that reaches it. A plain client has
one route; a client over an endpoint group has one per endpoint and picks
one per attempt (:mod:`llmpool.group_path`).

Immutable values; thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from llmpool.models import Request
from llmpool.options import parse_base_url
from llmpool.pool.interfaces import Transport
from llmpool.pool.redirects import RedirectingTransport
from llmpool.providers import Provider

__all__ = ["Rebuild", "Route", "make_route"]

#: ``rebuild(provider, model) -> (request, parse)``: a call shaped by another
#: endpoint's provider or for another model, and the function that parses its
#: answer (the client makes one per call over an endpoint group).
Rebuild = Callable[[Provider, "str | None"], "tuple[Request, Callable[..., Any]]"]


@attrs.frozen(kw_only=True)
class Route:
    """One endpoint as the request path uses it. Immutable; share freely."""

    #: The endpoint's name (None for a plain client's one route).
    name: str | None
    provider: Provider
    #: The base URL as shown (never with credentials).
    base_url: str
    #: What request paths are appended to, and the query string every request keeps.
    url_prefix: str
    url_query: str
    transport: Transport
    #: The same transport, following redirects (secrets never leave their origin).
    redirecting: Transport

    def url(self, path: str) -> str:
        """The URL of a request *path*, keeping the base URL's query string."""
        if not self.url_query:
            return self.url_prefix + path
        return f"{self.url_prefix}{path}{'&' if '?' in path else '?'}{self.url_query}"

    def with_headers(self, headers: Mapping[str, str]) -> Route:
        """This route with the provider's default headers changed."""
        return attrs.evolve(self, provider=self.provider.with_headers(headers))


def make_route(name: str | None, provider: Provider, base_url: str, transport: Transport) -> Route:
    """The route to *base_url* (checked: see :func:`llmpool.options.parse_base_url`)."""
    shown, prefix, query = parse_base_url(base_url, provider.api_path)
    return Route(
        name=name,
        provider=provider,
        base_url=shown,
        url_prefix=prefix,
        url_query=query,
        transport=transport,
        redirecting=RedirectingTransport(transport, secret_headers=provider.secret_headers),
    )
