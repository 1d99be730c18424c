"""An example llmpool plugin, packaged on its own and found through its entry point.

``example_headers`` adds the headers of its ``headers`` setting to every
request and counts the calls it saw per operation and outcome.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from llmpool.exceptions import ConfigError
from llmpool.models import CallContext, Request
from llmpool.plugins import LLMPlugin, PluginContext

__all__ = ["HeadersPlugin"]


class HeadersPlugin(LLMPlugin):
    """Adds fixed headers to each request and counts calls. Thread-safe (one lock)."""

    name = "example_headers"
    version = "0.1.0"
    api_version = "1.0"
    priority = 50

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        # Guards counts.
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def setup(self, context: PluginContext) -> None:
        headers = context.settings.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError("headers must map names to strings", key="headers", value=headers)
        self.headers = dict(headers)

    def before_request(self, ctx: CallContext, request: Request) -> Request | None:
        if not self.headers:
            return None
        return request.replace(headers={**request.headers, **self.headers})

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        self._count(f"{ctx.operation}:ok")

    def on_error(self, ctx: CallContext, request: Request, error: Exception) -> None:
        self._count(f"{ctx.operation}:error")

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counts)
