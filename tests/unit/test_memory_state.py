"""The memory states and the pure state machine: entry, exit, hysteresis."""

from __future__ import annotations

import pytest

from llmpool.memory import MemoryState
from llmpool.memory.state import StateMachine

N, W, G, S, C = (
    MemoryState.NORMAL,
    MemoryState.WARN,
    MemoryState.GC,
    MemoryState.SHED,
    MemoryState.CRITICAL,
)


def machine(consecutive: int = 3, hysteresis: float = 0.05) -> StateMachine:
    return StateMachine((0.70, 0.80, 0.90, 0.95), consecutive, hysteresis)


def run(m: StateMachine, usages: list[float]) -> list[MemoryState]:
    return [m.update(u) for u in usages]


def test_states_are_ordered_with_lowercase_values() -> None:
    """NORMAL < WARN < GC < SHED < CRITICAL, values are the lower-case names."""
    assert sorted([C, N, S, W, G]) == [N, W, G, S, C]
    assert [s.value for s in MemoryState] == ["normal", "warn", "gc", "shed", "critical"]
    assert str(S) == "shed" and MemoryState("gc") is G
    assert S >= G and G <= G and not (N > W)


def test_comparison_with_other_types_is_refused() -> None:
    """Ordering a state against a string is a TypeError, not a silent answer."""
    with pytest.raises(TypeError):
        assert N < "warn"  # type: ignore[operator]


def test_a_state_is_entered_only_after_consecutive_samples() -> None:
    """Two samples above WARN do nothing; the third enters WARN."""
    assert run(machine(), [0.75, 0.75, 0.75]) == [N, N, W]


def test_a_dip_resets_the_entry_streak() -> None:
    """A sample below the threshold restarts the count."""
    assert run(machine(), [0.75, 0.75, 0.60, 0.75, 0.75, 0.75]) == [N, N, N, N, N, W]


def test_normal_can_jump_straight_to_critical() -> None:
    """Three samples above CRITICAL go from NORMAL to CRITICAL in one step."""
    assert run(machine(), [0.99, 0.99, 0.99]) == [N, N, C]


def test_mixed_high_samples_enter_the_highest_state_they_all_reach() -> None:
    """0.96, 0.85, 0.96 are all above GC but not all above CRITICAL: GC."""
    assert run(machine(), [0.96, 0.85, 0.96]) == [N, N, G]


def test_a_state_is_kept_inside_the_hysteresis_band() -> None:
    """WARN (0.70) is kept at 0.66: leaving needs usage below 0.65."""
    m = machine()
    run(m, [0.72] * 3)
    assert run(m, [0.66] * 10) == [W] * 10


def test_leaving_needs_consecutive_samples_below_threshold_minus_hysteresis() -> None:
    """Below 0.65 twice keeps WARN; the third sample leaves to NORMAL."""
    m = machine()
    run(m, [0.72] * 3)
    assert run(m, [0.60, 0.60, 0.60]) == [W, W, N]


def test_a_high_sample_resets_the_exit_streak() -> None:
    """One sample back inside the band restarts the exit count."""
    m = machine()
    run(m, [0.72] * 3)
    assert run(m, [0.60, 0.60, 0.68, 0.60, 0.60, 0.60]) == [W, W, W, W, W, N]


def test_falling_lands_on_the_highest_state_still_held() -> None:
    """From CRITICAL, usage at 0.82 falls to GC (above 0.80 - 0.05), not further."""
    m = machine()
    run(m, [0.99] * 3)
    assert run(m, [0.82] * 3) == [C, C, G]


def test_critical_can_fall_straight_to_normal() -> None:
    """Three samples far below every threshold go from CRITICAL to NORMAL."""
    m = machine()
    run(m, [0.99] * 3)
    assert run(m, [0.10] * 3) == [C, C, N]


def test_one_sample_mode_reacts_at_once() -> None:
    """consecutive=1 enters and leaves on a single sample."""
    m = machine(consecutive=1)
    assert run(m, [0.91, 0.84, 0.50]) == [S, G, N]


def test_zero_hysteresis_leaves_just_below_the_threshold() -> None:
    """With hysteresis 0, usage just under the threshold counts toward leaving."""
    m = machine(consecutive=1, hysteresis=0.0)
    assert run(m, [0.70, 0.6999]) == [W, N]


def test_reset_forgets_state_and_streaks() -> None:
    """After reset the machine is NORMAL and needs a full streak again."""
    m = machine()
    run(m, [0.99] * 3)
    m.reset()
    assert m.state is N
    assert run(m, [0.99, 0.99]) == [N, N]


def test_wrong_number_of_thresholds_is_refused() -> None:
    """The machine needs exactly four thresholds."""
    with pytest.raises(ValueError, match="4 thresholds"):
        StateMachine((0.5, 0.6), 3, 0.05)
