"""The memory states and the pure state machine that moves between them.

The machine knows nothing about threads, clocks or actions: it is fed one
usage fraction per sample and answers the state. The manager serialises the
calls and acts on the answers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = ["MemoryState", "StateMachine"]


class MemoryState(enum.Enum):
    """How pressed the process is, from NORMAL to CRITICAL.

    Members are ordered (``MemoryState.GC < MemoryState.SHED``) and their
    values are the lower-case names (``"normal"``, ``"warn"``, ``"gc"``,
    ``"shed"``, ``"critical"``). Immutable; share freely between threads.
    """

    NORMAL = "normal"
    WARN = "warn"
    GC = "gc"
    SHED = "shed"
    CRITICAL = "critical"

    @property
    def level(self) -> int:
        """The position of the state: 0 for NORMAL up to 4 for CRITICAL."""
        return _LEVEL[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, MemoryState):
            return NotImplemented
        return self.level < other.level

    def __le__(self, other: object) -> bool:
        if not isinstance(other, MemoryState):
            return NotImplemented
        return self.level <= other.level

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, MemoryState):
            return NotImplemented
        return self.level > other.level

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, MemoryState):
            return NotImplemented
        return self.level >= other.level

    def __str__(self) -> str:
        return self.value


_ORDER = tuple(MemoryState)
_LEVEL = {state: index for index, state in enumerate(_ORDER)}


class StateMachine:
    """Turns a sequence of usage fractions into a :class:`MemoryState`.

    *thresholds* are the entry fractions of WARN, GC, SHED and CRITICAL, in
    that order. A state is entered after *consecutive* samples in a row at or
    above its threshold; the highest such state wins, so NORMAL can go
    straight to CRITICAL. A state is left only after *consecutive* samples in
    a row below its threshold minus *hysteresis*; the machine then falls to
    the highest state that is not left by the same rule (CRITICAL can fall
    straight to NORMAL). Leaving takes consecutive samples too, so one low
    reading (a collection that freed a little, a sampling hiccup) does not
    make the state flap.

    Not thread-safe: the manager calls :meth:`update` under its lock.
    """

    def __init__(self, thresholds: Sequence[float], consecutive: int, hysteresis: float) -> None:
        if len(thresholds) != len(_ORDER) - 1:
            raise ValueError(f"need {len(_ORDER) - 1} thresholds, got {len(thresholds)}")
        # Index 0 stands for NORMAL, which has no threshold and no streaks.
        self._thresholds = (0.0, *thresholds)
        self._consecutive = consecutive
        self._hysteresis = hysteresis
        self._level = 0
        self._above = [0] * len(_ORDER)
        self._below = [0] * len(_ORDER)

    @property
    def state(self) -> MemoryState:
        """The current state."""
        return _ORDER[self._level]

    def reset(self) -> None:
        """Forget every streak and go back to NORMAL."""
        self._level = 0
        self._above = [0] * len(_ORDER)
        self._below = [0] * len(_ORDER)

    def update(self, usage: float) -> MemoryState:
        """Account one sample's usage fraction and return the state after it."""
        need = self._consecutive
        for level in range(1, len(_ORDER)):
            threshold = self._thresholds[level]
            above = usage >= threshold
            below = usage < threshold - self._hysteresis
            self._above[level] = min(self._above[level] + 1, need) if above else 0
            self._below[level] = min(self._below[level] + 1, need) if below else 0
        entered = max((lv for lv in range(1, len(_ORDER)) if self._above[lv] >= need), default=0)
        if entered > self._level:
            self._level = entered
        else:
            self._level = max(
                (lv for lv in range(1, self._level + 1) if self._below[lv] < need), default=0
            )
        return _ORDER[self._level]
