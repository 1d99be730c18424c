"""After os.fork() the child gets fresh locks, fresh measurements and its own sampler thread."""

from __future__ import annotations

import os
import threading
import time

import pytest

from llmpool import MemoryConfig
from llmpool.memory import THREAD_NAME, MemoryManager

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    # Python 3.12+ warns when a multi-threaded process forks: that is the point here.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PATIENCE = 30.0


def wait_for(predicate: object, limit: float = PATIENCE) -> bool:
    """Poll *predicate* until true or *limit* seconds pass (a bound, not an assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def child_checks(manager: MemoryManager) -> int:
    """Run in the child; 0 when every check passes, else the number of the failed check."""
    if not manager.running:
        return 10
    if len([t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]) != 1:
        return 11
    pid = os.getpid()
    if not wait_for(lambda: (s := manager.snapshot()) is not None and s.pid == pid):
        return 12
    if manager.report().operations:
        return 13
    manager.account("chat", "child", 1, 1, 0.1)  # the fresh lock works
    manager.stop(timeout=PATIENCE)
    if manager.running:
        return 14
    return 0


def run_in_child(fn: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = fn()  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_restarts_the_sampler_thread_and_samples_itself() -> None:
    """A running manager forks: the child has a new live thread sampling the child's pid,
    empty accounting, and can stop it; the parent's thread keeps running."""
    manager = MemoryManager(MemoryConfig(sample_interval=0.01))
    manager.start()
    try:
        assert wait_for(lambda: manager.snapshot() is not None)
        manager.account("chat", "parent", 10, 10, 0.1)
        assert run_in_child(lambda: child_checks(manager)) == 0
        assert manager.running
        snap = manager.snapshot()
        assert snap is not None and snap.pid == os.getpid()
        assert set(manager.report().operations) == {"chat:parent"}
    finally:
        manager.stop(timeout=PATIENCE)


def test_a_stopped_manager_stays_stopped_in_the_child() -> None:
    """No thread is started in the child when the parent's was not running."""
    manager = MemoryManager(MemoryConfig(sample_interval=0.01))

    def check() -> int:
        return 0 if not manager.running and manager.tick() is not None else 1

    assert run_in_child(check) == 0
