"""keyscope_server.throttle.FailureBudget: a sliding window of failures per subject, on a clock the test moves."""

from __future__ import annotations

import pytest

from keyscope_server.errors import Throttled
from keyscope_server.throttle import FailureBudget


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budget(clock: FakeClock, failures: int = 5, tracked: int = 100) -> FailureBudget:
    return FailureBudget(failures, 1.0, reason="TOO_MANY", what="failures", tracked=tracked, clock=clock)


def refused_for(failures: FailureBudget, subject: str) -> float | None:
    """The retry delay `check` raises with, None if it lets the subject through."""
    try:
        failures.check(subject)
    except Throttled as throttled:
        assert throttled.reason == "TOO_MANY"
        return throttled.retry_after
    return None


def test_ok_within_the_budget_nothing_is_refused() -> None:
    clock = FakeClock()
    failures = budget(clock)
    for _ in range(5):
        assert refused_for(failures, "a") is None
        failures.spend("a")
    assert refused_for(failures, "a") == 1.201  # the window's end, then a fifth of the next one, rounded up


def test_ok_subjects_have_budgets_of_their_own() -> None:
    clock = FakeClock()
    failures = budget(clock)
    for _ in range(5):
        failures.spend("a")
    assert refused_for(failures, "a") is not None
    assert refused_for(failures, "b") is None


def test_ok_taken_again_once_the_retry_delay_has_passed_and_not_before() -> None:
    clock = FakeClock()
    failures = budget(clock)
    for _ in range(5):
        failures.spend("a")
    delay = refused_for(failures, "a")
    assert delay is not None
    clock.now += delay - 0.002
    assert refused_for(failures, "a") is not None
    clock.now += 0.002
    assert refused_for(failures, "a") is None


def test_ok_failures_of_the_previous_window_count_by_the_share_still_in_the_sliding_window() -> None:
    clock = FakeClock(1000.5)  # halfway into a fixed window
    failures = budget(clock, failures=10)
    for _ in range(10):
        failures.spend("a")
    clock.now = 1001.5  # the sliding window now covers half of the previous fixed window: 5 of its 10 failures
    for _ in range(5):
        assert refused_for(failures, "a") is None
        failures.spend("a")
    delay = refused_for(failures, "a")
    assert delay == pytest.approx(0.1, abs=0.002)  # 10 * (1 - x) + 5 <= 9 from x = 0.6 into the window


def test_ok_a_subject_whose_failures_aged_out_is_forgotten() -> None:
    clock = FakeClock()
    failures = budget(clock)
    failures.spend("a")
    clock.now += 2.5
    assert refused_for(failures, "a") is None
    assert len(failures) == 0


def test_ok_bounded_in_subjects_least_recently_failed_first() -> None:
    clock = FakeClock()
    failures = budget(clock, failures=1, tracked=3)
    for subject in ("a", "b", "c"):
        failures.spend(subject)
    failures.spend("a")  # a failed last: b is now the oldest
    failures.spend("d")
    assert len(failures) == 3
    assert [refused_for(failures, s) is not None for s in ("a", "b", "c", "d")] == [True, False, True, True]


def test_invalid_argument_a_budget_of_nothing() -> None:
    with pytest.raises(ValueError):
        FailureBudget(0, 1.0, reason="R", what="w")
