"""Fresh locks for the built-in plugins in a forked child.

A lock held by another thread at ``fork()`` stays held forever in the child
(gunicorn ``--preload``, Celery prefork). Each built-in plugin with a lock
registers itself here; the child replaces the ``_lock`` of every live one.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["renew_lock_after_fork"]

_OWNERS: weakref.WeakSet[Any] = weakref.WeakSet()


def renew_lock_after_fork(owner: Any) -> None:
    """Give *owner* a new ``_lock`` in every forked child (held weakly)."""
    _OWNERS.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_OWNERS):
        owner._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
