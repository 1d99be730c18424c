"""Shared state: rate-limit windows, cached answers and cool-downs, in this
process (:class:`MemoryBackend`, the default) or in Redis (shared by every
process and host; the ``redis`` extra).

``state/`` imports values only (config, exceptions, redaction, forking); the
client builds one backend from the ``state`` section and hands it to the
plugins through :class:`~llmpool.plugins.PluginContext`. Only
``state/redis.py`` imports redis, and only when a configuration chooses it.
"""

from __future__ import annotations

from typing import Any

from llmpool.exceptions import ConfigError
from llmpool.state.base import Admission, ErrorLog, RateLimits, StateBackend
from llmpool.state.config import StateConfig
from llmpool.state.keys import CredentialScopes, cache_digest, credential_scope, key_part
from llmpool.state.memory import MemoryBackend

__all__ = [
    "Admission",
    "ErrorLog",
    "MemoryBackend",
    "RateLimits",
    "StateBackend",
    "CredentialScopes",
    "StateConfig",
    "cache_digest",
    "credential_scope",
    "key_part",
    "open_backend",
]


def open_backend(state: Any) -> tuple[StateBackend, bool]:
    """``(backend, owned)`` for a client's *state* argument: a
    :class:`StateConfig` or None builds one (owned: the client closes it);
    a :class:`StateBackend` is shared as it is."""
    if isinstance(state, StateBackend):
        return state, False
    if state is None:
        state = StateConfig()
    if not isinstance(state, StateConfig):
        raise ConfigError(
            f"state must be a StateConfig or a StateBackend, got {type(state).__name__}",
            key="state",
        )
    if state.backend == "memory":
        return MemoryBackend(on_backend_error=state.on_backend_error), True
    try:
        from llmpool.state.redis import RedisBackend
    except ImportError as exc:
        raise ConfigError(
            "state backend redis needs the redis package: pip install 'llmpool[redis]'",
            key="state.backend",
            value="redis",
        ) from exc
    return RedisBackend(state), True
