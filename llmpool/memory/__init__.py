"""The memory manager: watches the process against a budget from a daemon thread.

:class:`MemoryManager` samples RSS (or the cgroup's working set) every
``sample_interval`` seconds, moves through :class:`MemoryState` values, and
acts: log, collect garbage (throttled), call back so the client sheds idle
connections and plugins drop caches, and optionally refuse new calls. This
package is the only part of llmpool that imports psutil; it never imports
the pool or the plugins (the client wires them together).
"""

from __future__ import annotations

from llmpool.memory.accounting import OTHER
from llmpool.memory.limits import CgroupFiles, MemoryLimit, discover_limit
from llmpool.memory.manager import (
    THREAD_NAME,
    Gauge,
    MemoryManager,
    PressureCallback,
    SampleLike,
)
from llmpool.memory.report import GCRun, GCStats, MemoryReport, MemorySample, OperationStats
from llmpool.memory.sampler import Sampler
from llmpool.memory.state import MemoryState

__all__ = [
    "OTHER",
    "THREAD_NAME",
    "CgroupFiles",
    "GCRun",
    "GCStats",
    "Gauge",
    "MemoryLimit",
    "MemoryManager",
    "MemoryReport",
    "MemorySample",
    "MemoryState",
    "OperationStats",
    "PressureCallback",
    "SampleLike",
    "Sampler",
    "discover_limit",
]
