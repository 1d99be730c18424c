"""The one fork-reset registry of llmpool.

A forked child (gunicorn ``--preload``, Celery prefork, ``multiprocessing``
with the fork start method) inherits every lock in the state it had at the
fork: one that another parent thread held stays held forever, and sockets and
threads do not come along. Each object with such state registers a reset
here with :func:`reset_after_fork`; one ``os.register_at_fork`` hook, set up
once when this module is imported, runs the resets in the child.

Objects are held weakly: registering never keeps anything alive, and a
collected object is simply skipped. Resets run in registration order, those
registered with ``last=True`` (a reset that starts a thread) after all the
others, so that whatever lock such a thread takes has been renewed first. A
reset that raises is logged and the next one still runs: the child must
survive.

Thread-safe: any thread may register at any time.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["renew_lock", "reset_after_fork"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A reset: the name of a method of the object, or a function taking the object.
Reset = str | Callable[[Any], None]


class _Registry:
    """Object -> its resets, for the first pass and for the last one."""

    def __init__(self) -> None:
        # Guards writes to first and last (renewed in the child before the resets run).
        self.lock = threading.Lock()
        self.first: weakref.WeakKeyDictionary[Any, tuple[Reset, ...]] = weakref.WeakKeyDictionary()
        self.last: weakref.WeakKeyDictionary[Any, tuple[Reset, ...]] = weakref.WeakKeyDictionary()


_REGISTRY = _Registry()


def reset_after_fork(obj: T, reset: str | Callable[[T], None], *, last: bool = False) -> None:
    """In every forked child, call ``obj.<reset>()`` (a method name) or
    ``reset(obj)`` (a function), while *obj* is alive.

    *obj* is held weakly; *reset* must not hold it (pass a method name or an
    unbound function, not a bound method). Registering the same reset for the
    same object twice is the same as once. ``last=True`` runs it after every
    other reset (for resets that start a thread).
    """
    registry = _REGISTRY.last if last else _REGISTRY.first
    with _REGISTRY.lock:
        resets = registry.get(obj, ())
        if reset not in resets:
            registry[obj] = (*resets, reset)


def renew_lock(owner: Any) -> None:
    """A reset for objects whose only fork-sensitive state is a ``_lock``
    (a ``threading.Lock``): give it a new one."""
    owner._lock = threading.Lock()


def _run(registry: weakref.WeakKeyDictionary[Any, tuple[Reset, ...]]) -> None:
    for obj, resets in list(registry.items()):
        for reset in resets:
            try:
                if isinstance(reset, str):
                    getattr(obj, reset)()
                else:
                    reset(obj)
            except Exception:
                log.exception("llmpool: resetting %s after fork failed", type(obj).__name__)


def _after_fork_in_child() -> None:
    _REGISTRY.lock = threading.Lock()  # a parent thread may have been registering at the fork
    _run(_REGISTRY.first)
    _run(_REGISTRY.last)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
