"""The in-process backend's cool-downs: deadlines only extend, expired ones are omitted."""

from __future__ import annotations

from llmpool.state import MemoryBackend
from llmpool.state.memory import MAX_COOLDOWNS


class WallClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_later_deadline_wins_and_an_earlier_one_is_ignored() -> None:
    clock = WallClock()
    store = MemoryBackend(wall_clock=clock)
    store.set_cooldown("g", "a", 1_030.0)
    store.set_cooldown("g", "a", 1_010.0)  # earlier: ignored
    assert store.get_cooldowns("g") == {"a": 1_030.0}
    store.set_cooldown("g", "a", 1_040.0)  # later: wins
    assert store.get_cooldowns("g") == {"a": 1_040.0}


def test_expired_cooldowns_are_omitted_and_a_deadline_equal_to_now_has_expired() -> None:
    clock = WallClock()
    store = MemoryBackend(wall_clock=clock)
    store.set_cooldown("g", "a", 1_005.0)
    store.set_cooldown("g", "b", 1_010.0)
    store.set_cooldown("g", "c", 999.0)  # already over when set
    assert store.get_cooldowns("g") == {"a": 1_005.0, "b": 1_010.0}
    clock.now = 1_005.0
    assert store.get_cooldowns("g") == {"b": 1_010.0}
    clock.now = 1_011.0
    assert store.get_cooldowns("g") == {}
    store.set_cooldown("g", "a", 1_012.0)  # an expired one does not block a new one
    assert store.get_cooldowns("g") == {"a": 1_012.0}


def test_scopes_are_separate() -> None:
    store = MemoryBackend(wall_clock=WallClock())
    store.set_cooldown("g1", "a", 1_020.0)
    store.set_cooldown("g2", "a", 1_050.0)
    assert store.get_cooldowns("g1") == {"a": 1_020.0}
    assert store.get_cooldowns("g2") == {"a": 1_050.0}
    assert store.get_cooldowns("g3") == {}


def test_the_number_kept_is_bounded_dropping_expired_then_earliest() -> None:
    clock = WallClock()
    store = MemoryBackend(wall_clock=clock)
    store.set_cooldown("g", "old", 1_001.0)
    for i in range(MAX_COOLDOWNS - 1):
        store.set_cooldown("g", f"e{i}", 2_000.0 + i)
    clock.now = 1_002.0  # "old" has expired
    store.set_cooldown("g", "new", 5_000.0)  # one over the bound: the expired one goes
    found = store.get_cooldowns("g")
    assert len(found) == MAX_COOLDOWNS and "old" not in found and found["new"] == 5_000.0
    store.set_cooldown("g", "newer", 6_000.0)  # nothing expired: the earliest goes
    found = store.get_cooldowns("g")
    assert len(found) == MAX_COOLDOWNS and "e0" not in found and found["newer"] == 6_000.0
