"""One sample: procfs fixture parsing, cgroup working set, psutil agreement, fork reopen."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from llmpool.memory import Sampler, discover_limit
from llmpool.memory.sampler import _PAGE

FIXTURES = Path(__file__).parent / "fixtures"
needs_procfs = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="procfs is Linux-only"
)


def test_procfs_fixture_is_parsed() -> None:
    """statm pages become bytes; threads come from stat past a ')' in the name; fds counted."""
    sample = Sampler(proc=str(FIXTURES / "procfs"), clock=lambda: 12.5)()
    assert sample.vms == 5000 * _PAGE
    assert sample.rss == 3000 * _PAGE
    assert sample.threads == 7
    assert sample.open_fds == 4
    assert sample.time == 12.5
    assert sample.pid == os.getpid()
    assert sample.cgroup_usage is None


def test_cgroup_v2_working_set_subtracts_inactive_file() -> None:
    """v2: memory.current minus memory.stat's inactive_file."""
    files = discover_limit(root=str(FIXTURES / "cgroup" / "v2")).cgroup
    sample = Sampler(files, proc=str(FIXTURES / "procfs"))()
    assert sample.cgroup_usage == 104857600 - 20971520


def test_cgroup_v1_working_set_subtracts_total_inactive_file() -> None:
    """v1: memory.usage_in_bytes minus total_inactive_file (not the local inactive_file)."""
    files = discover_limit(root=str(FIXTURES / "cgroup" / "v1")).cgroup
    sample = Sampler(files, proc=str(FIXTURES / "procfs"))()
    assert sample.cgroup_usage == 314572800 - 52428800


def test_unreadable_cgroup_files_give_no_cgroup_usage(tmp_path: Path) -> None:
    """Usage files that vanished read as None; the rest of the sample still works."""
    files = discover_limit(root=str(FIXTURES / "cgroup" / "v2")).cgroup
    assert files is not None
    missing = type(files)(
        version=2,
        directory=str(tmp_path),
        usage_file=str(tmp_path / "memory.current"),
        stat_file=str(tmp_path / "memory.stat"),
        inactive_key="inactive_file",
    )
    sample = Sampler(missing, proc=str(FIXTURES / "procfs"))()
    assert sample.cgroup_usage is None
    assert sample.rss == 3000 * _PAGE


@needs_procfs
def test_real_procfs_agrees_with_psutil() -> None:
    """On Linux the procfs reader gives psutil's vms exactly and rss within a page budget."""
    sampler = Sampler()
    assert sampler.uses_procfs
    sample = sampler()
    info = psutil.Process().memory_info()
    assert sample.vms == pytest.approx(info.vms, rel=0.05)
    assert sample.rss == pytest.approx(info.rss, rel=0.05)
    # Another test's thread may start or end between the two readings.
    assert sample.threads is not None
    assert abs(sample.threads - psutil.Process().num_threads()) <= 2
    assert sample.open_fds is not None and sample.open_fds > 0
    sampler.close()


def test_psutil_reader_is_the_fallback() -> None:
    """proc=None forces psutil: memory_info, num_threads and num_fds fill the sample."""
    sampler = Sampler(proc=None)
    assert not sampler.uses_procfs
    sample = sampler()
    assert sample.rss > 0 and sample.vms >= sample.rss
    assert sample.threads is not None and sample.threads >= 1
    if sys.platform != "win32":
        assert sample.open_fds is not None


@needs_procfs
def test_a_new_pid_reopens_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the pid changes (a fork) the kept-open descriptors are replaced."""
    sampler = Sampler()
    sampler()
    before = dict(sampler._fds)
    monkeypatch.setattr(os, "getpid", lambda: 999_999)
    sample = sampler()
    assert sample.pid == 999_999
    assert set(sampler._fds) == set(before)
    assert sampler._pid == 999_999
    sampler.close()


@needs_procfs
def test_after_fork_and_close_drop_descriptors() -> None:
    """after_fork() and close() leave no descriptor open; the next call reopens."""
    sampler = Sampler()
    sampler()
    fds = list(sampler._fds.values())
    sampler.after_fork()
    assert sampler._fds == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert sampler().rss > 0
    sampler.close()
    assert sampler._fds == {}
