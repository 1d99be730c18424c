"""The ``state`` section: which shared-state backend a client uses.

A value module: it imports only the validators and the exceptions, so the
configuration modules and the backends can all use it without a cycle.
"""

from __future__ import annotations

from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.validators import SECRET, non_negative_number, optional_str, url_repr

__all__ = ["BACKENDS", "DEFAULT_KEY_PREFIX", "ON_BACKEND_ERROR", "StateConfig"]

#: The backends a configuration may name.
BACKENDS = ("memory", "redis")

#: What a call does when the backend fails: go on without it, or fail.
ON_BACKEND_ERROR = ("allow", "deny")

#: The prefix of every Redis key llmpool writes.
DEFAULT_KEY_PREFIX = "llmpool"


def _default_backend(self: StateConfig) -> str:
    return "redis" if self.url else "memory"


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}",
                key=attribute.name,
                value=value,
            )

    return check


def _key_prefix(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, str) and 0 < len(value) <= 64
    if not ok or any(c.isspace() or c in "{}" for c in value):
        raise ConfigError(
            f"{attribute.name} must be 1 to 64 characters without spaces or braces, got {value!r}",
            key=attribute.name,
            value=value,
        )


def _state_timeout(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    non_negative_number(_inst, attribute, value)
    if not 0 < value <= 60:
        raise ConfigError(
            f"{attribute.name} must be more than 0 and at most 60 seconds, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class StateConfig:
    """The ``state`` section: where rate-limit budgets, cached answers and
    cool-downs live. Immutable; share freely between threads.

    ``backend`` is ``memory`` (each process keeps its own, the default) or
    ``redis`` (every process and host pointed at the same Redis shares them;
    needs the ``redis`` extra). Setting ``url`` (or ``LLMPOOL_STATE_URL``)
    alone chooses ``redis``.
    """

    #: ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS); never logged in full.
    url: str | None = attrs.field(
        default=None, validator=optional_str, repr=url_repr, metadata=SECRET
    )
    #: ``memory`` or ``redis`` (default: ``redis`` when ``url`` is set).
    backend: str = attrs.field(
        default=attrs.Factory(_default_backend, takes_self=True), validator=_one_of(BACKENDS)
    )
    #: The prefix of every key; give each deployment (or tenant) its own.
    key_prefix: str = attrs.field(default=DEFAULT_KEY_PREFIX, validator=_key_prefix)
    #: Longest wait for one backend operation (connect, or one command's reply), in
    #: seconds; a call's own deadline shortens it.
    timeout: float = attrs.field(default=0.25, validator=_state_timeout)
    #: ``allow``: a call goes on without the backend when it fails (logged at most
    #: once a minute, counted). ``deny``: the call fails with StateBackendError.
    on_backend_error: str = attrs.field(default="allow", validator=_one_of(ON_BACKEND_ERROR))

    def __attrs_post_init__(self) -> None:
        if self.backend == "redis" and not self.url:
            raise ConfigError(
                "backend redis needs url (or LLMPOOL_STATE_URL)", key="url", value=None
            )
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "url must start with redis://, rediss:// or unix://", key="url", value=None
            )
