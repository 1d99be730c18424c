"""One sample of the process's memory, as cheaply as the platform allows.

On Linux the sampler keeps ``/proc/self/statm`` and ``/proc/self/stat`` (and
the cgroup's usage and ``memory.stat`` when the budget is the cgroup's) open
and re-reads them with ``pread``: RSS and VMS are the same numbers as
psutil's ``memory_info()`` (both read ``statm``) at a fraction of the cost.
Elsewhere it asks psutil (``memory_info()``, ``num_threads()``,
``num_fds()``). It never calls ``memory_full_info()``, which walks every
mapping of the process and costs milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from llmpool.memory.limits import CgroupFiles, stat_value
from llmpool.memory.report import MemorySample

__all__ = ["Sampler"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: Large enough for any memory.stat seen so far (v2 on 6.x kernels: ~3 KiB).
_READ_SIZE = 16384
#: Field index of num_threads in /proc/self/stat, counted after the ")" closing comm.
_THREADS_FIELD = 17


class Sampler:
    """Takes one :class:`MemorySample` of this process per call.

    *cgroup* names the cgroup files to read (only when the budget is the
    cgroup's); *proc* is the procfs directory of the process (injectable for
    fixture tests; ``None`` forces psutil). Thread-safe: one lock serialises
    samples (each is a few ``pread`` calls at offset 0 on kept-open
    descriptors). After a fork the first call sees a new pid and reopens
    them, because a ``/proc/self`` descriptor keeps pointing at the parent.
    """

    def __init__(
        self,
        cgroup: CgroupFiles | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        proc: str | None = "/proc/self",
    ) -> None:
        self._cgroup = cgroup
        self._clock = clock
        self._proc = proc if proc is not None and os.path.exists(f"{proc}/statm") else None
        # Guards _fds, _pid and _psutil: held for one sample (a few procfs reads, no
        # network, no callbacks) so close() never frees a descriptor mid-read.
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._pid = -1
        self._psutil: Any = None

    @property
    def uses_procfs(self) -> bool:
        """Whether samples come from procfs (else from psutil)."""
        return self._proc is not None

    def __call__(self) -> MemorySample:
        pid = os.getpid()
        with self._lock:
            if pid != self._pid:
                self._reopen(pid)
            if self._proc is not None:
                rss, vms, threads, fds = self._read_procfs(self._proc)
            else:
                rss, vms, threads, fds = self._read_psutil()
            cgroup_usage = self._read_cgroup() if self._cgroup is not None else None
        return MemorySample(
            time=self._clock(),
            pid=pid,
            rss=rss,
            vms=vms,
            cgroup_usage=cgroup_usage,
            threads=threads,
            open_fds=fds,
        )

    def close(self) -> None:
        """Close the kept-open files; the next call reopens them."""
        with self._lock:
            self._close_fds()
            self._pid = -1

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's thread may have held the old
        one) and no parent descriptors (the next call reopens them)."""
        self._lock = threading.Lock()
        self._close_fds()
        self._pid = -1

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reopen(self, pid: int) -> None:
        """Open the files for *pid* (a new process after a fork). Called under the lock."""
        self._close_fds()
        self._psutil = None
        paths: dict[str, str] = {}
        if self._proc is not None:
            paths["statm"] = f"{self._proc}/statm"
            paths["stat"] = f"{self._proc}/stat"
        if self._cgroup is not None:
            paths["usage"] = self._cgroup.usage_file
            paths["mstat"] = self._cgroup.stat_file
        for name, path in paths.items():
            try:
                self._fds[name] = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                continue  # that value reads as None; the rest still works
        self._pid = pid

    def _pread(self, name: str) -> bytes:
        return os.pread(self._fds[name], _READ_SIZE, 0)

    def _read_procfs(self, proc: str) -> tuple[int, int, int | None, int | None]:
        statm = self._pread("statm").split()
        vms, rss = int(statm[0]) * _PAGE, int(statm[1]) * _PAGE
        threads: int | None = None
        if "stat" in self._fds:
            stat = self._pread("stat")
            threads = int(stat[stat.rindex(b")") + 2 :].split()[_THREADS_FIELD])
        try:
            fds: int | None = len(os.listdir(f"{proc}/fd"))
        except OSError:
            fds = None
        return rss, vms, threads, fds

    def _read_psutil(self) -> tuple[int, int, int | None, int | None]:
        if self._psutil is None:
            import psutil

            self._psutil = psutil.Process()
        process = self._psutil
        info = process.memory_info()
        threads = process.num_threads()
        fds = process.num_fds() if hasattr(process, "num_fds") else None
        return int(info.rss), int(info.vms), int(threads), fds

    def _read_cgroup(self) -> int | None:
        """The cgroup's working set: usage minus inactive file cache, or None."""
        cgroup = self._cgroup
        if cgroup is None or "usage" not in self._fds:
            return None
        usage = int(self._pread("usage"))
        inactive = 0
        if "mstat" in self._fds:
            inactive = stat_value(self._pread("mstat"), cgroup.inactive_key.encode()) or 0
        return max(usage - inactive, 0)
