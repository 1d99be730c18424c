"""The one fork-reset registry: weak, once per reset, in order, surviving a failing reset."""

from __future__ import annotations

import gc
import logging
import os
import threading
import weakref
from collections.abc import Iterator

import pytest

from llmpool import forking


class Owner:
    def __init__(self, log: list[str], name: str = "owner") -> None:
        self.log = log
        self.name = name
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.log.append(f"{self.name}.reset")


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[forking._Registry]:
    """A private registry, so running the child hook never touches other tests' objects."""
    fresh = forking._Registry()
    monkeypatch.setattr(forking, "_REGISTRY", fresh)
    yield fresh


def test_method_name_and_function_resets_run_in_the_child(registry: forking._Registry) -> None:
    """A registered method name is called on the object, a function with the object."""
    log: list[str] = []
    owner = Owner(log)
    forking.reset_after_fork(owner, "reset")
    forking.reset_after_fork(owner, lambda o: o.log.append("function"))
    forking._after_fork_in_child()
    assert log == ["owner.reset", "function"]


def test_registering_twice_resets_once(registry: forking._Registry) -> None:
    """The same reset registered twice for one object runs once."""
    log: list[str] = []
    owner = Owner(log)
    forking.reset_after_fork(owner, "reset")
    forking.reset_after_fork(owner, "reset")
    forking._after_fork_in_child()
    assert log == ["owner.reset"]


def test_objects_are_held_weakly(registry: forking._Registry) -> None:
    """Registering keeps nothing alive; a collected object is skipped."""
    log: list[str] = []
    owner = Owner(log)
    ref = weakref.ref(owner)
    forking.reset_after_fork(owner, "reset")
    del owner
    gc.collect()
    assert ref() is None
    forking._after_fork_in_child()
    assert log == []


def test_last_resets_run_after_all_others(registry: forking._Registry) -> None:
    """A reset registered with last=True (a thread restart) runs after those registered later."""
    log: list[str] = []
    threads = Owner(log, "thread")
    locks = Owner(log, "lock")
    forking.reset_after_fork(threads, "reset", last=True)
    forking.reset_after_fork(locks, "reset")
    forking._after_fork_in_child()
    assert log == ["lock.reset", "thread.reset"]


def test_a_failing_reset_is_logged_and_the_rest_still_run(
    registry: forking._Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """One reset raising does not stop the others: the child must survive."""
    log: list[str] = []
    broken, fine = Owner(log, "broken"), Owner(log, "fine")
    forking.reset_after_fork(broken, "no_such_method")
    forking.reset_after_fork(fine, "reset")
    with caplog.at_level(logging.ERROR, logger="llmpool.forking"):
        forking._after_fork_in_child()
    assert log == ["fine.reset"]
    assert "resetting Owner after fork failed" in caplog.text


def test_renew_lock_replaces_a_held_lock(registry: forking._Registry) -> None:
    """renew_lock gives the owner a new, free lock in place of one held at the fork."""
    owner = Owner([])
    owner._lock.acquire()
    held = owner._lock
    forking.reset_after_fork(owner, forking.renew_lock)
    forking._after_fork_in_child()
    assert owner._lock is not held
    assert owner._lock.acquire(blocking=False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_hook_runs_in_a_real_forked_child() -> None:
    """After os.fork() the child has run the reset (the hook is registered at import)."""
    log: list[str] = []
    owner = Owner(log)
    forking.reset_after_fork(owner, forking.renew_lock)
    owner._lock.acquire()  # as if another thread held it at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = owner._lock.acquire(blocking=False)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 1)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
        owner._lock.release()
    assert answer == b"1"
