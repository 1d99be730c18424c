"""The sampler thread: a named daemon that ticks its owner on an Event's timeout.

It waits with ``Event.wait(interval)``, never ``time.sleep``, so ``stop()``
wakes it at once. It holds its owner only weakly: a manager dropped without
``stop()`` sets the Event from a finalizer and the thread exits.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["THREAD_NAME", "SamplerThread"]

#: The sampler thread's name (shown by py-spy, faulthandler and ``threading.enumerate()``).
THREAD_NAME = "llmpool-memory"

T = TypeVar("T")


def _loop(
    ref: weakref.ReferenceType[Any],
    tick: Callable[[Any], None],
    event: threading.Event,
    interval: float,
) -> None:
    """The thread's body: tick, then wait; stop when the Event is set or the owner is gone."""
    while True:
        owner = ref()
        if owner is None:
            return
        tick(owner)
        del owner
        if event.wait(interval):
            return


class SamplerThread:
    """Starts and stops one daemon thread that calls *tick* every *interval* seconds.

    The first tick runs as soon as the thread starts. Thread-safe: a lock
    guards the thread, its Event and its finalizer; ``stop()`` joins outside
    the lock (and never joins itself when a tick calls it).
    """

    def __init__(self, interval: float, name: str = THREAD_NAME) -> None:
        self._interval = interval
        self._name = name
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # guards _thread, _event, _finalizer
        self._thread: threading.Thread | None = None
        self._event = threading.Event()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, owner: T, tick: Callable[[T], None]) -> None:
        """Start calling ``tick(owner)`` (idempotent); *owner* is held weakly."""
        with self._lock:
            if self._thread is not None:
                return
            event = threading.Event()
            thread = threading.Thread(
                target=_loop,
                args=(weakref.ref(owner), tick, event, self._interval),
                name=self._name,
                daemon=True,
            )
            self._event, self._thread = event, thread
            # When the owner is collected without stop(), wake the thread so it exits.
            self._finalizer = weakref.finalize(owner, event.set)
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Wake the thread and wait up to *timeout* seconds for it to end."""
        with self._lock:
            thread, event, finalizer = self._thread, self._event, self._finalizer
            self._thread = self._finalizer = None
        if thread is None:
            return
        if finalizer is not None:
            finalizer.detach()
        event.set()
        if thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork(self, owner: T, tick: Callable[[T], None]) -> None:
        """In a forked child: fresh lock and Event, and a new thread if one was started."""
        was_started = self._thread is not None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._reset()
        if was_started:
            self.start(owner, tick)
