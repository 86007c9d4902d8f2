"""`syncd.liveness`: when a running job counts as stalled, with time as an argument (the
daemon's watchdog job and the subprocess tests are tests/test_daemon.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import liveness
from syncd.clock import SystemClock
from syncd.liveness import Liveness
from syncd.state import Store


def test_an_idle_worker_is_never_stalled() -> None:
    live = Liveness(bound=10)
    assert live.stalled(1e9) is None
    live.begin("pull", 0)
    live.end(5)
    assert live.running is None and live.stalled(1e9) is None


def test_a_job_that_shows_nothing_for_the_bound_is_stalled_and_not_before() -> None:
    live = Liveness(bound=10)
    live.begin("reconcile", 100, thread=7)
    assert live.stalled(110) is None
    stall = live.stalled(110.5)
    assert stall == liveness.Stall("reconcile", 10.5, 10, None, 7)


def test_beats_keep_a_job_alive_and_the_quiet_counts_from_the_last() -> None:
    live = Liveness(bound=10)
    live.begin("reconcile", 0)
    for t in range(1, 50):
        live.beat(t)
        assert live.stalled(t + 9.9) is None
    stall = live.stalled(49 + 12)
    assert stall is not None and stall.quiet == 12


def test_a_retry_after_of_120_s_is_a_wait_not_a_stall() -> None:
    """A vendor's Retry-After (up to retry_after_cap, 120 s by default) is slept through
    `SystemClock.sleep`, which announces its length: far past the bound, nothing is stalled
    until the sleep's own end plus the bound."""
    live = Liveness(bound=10)
    live.begin("reconcile", 0)
    token = live.open_wait(120, 1)
    assert live.stalled(60) is None and live.stalled(130.9) is None
    stall = live.stalled(131.5)  # the sleep should have ended 10.5 s ago: it never returned
    assert stall is not None and stall.overdue_wait == 120
    live.close_wait(token, 121)
    assert live.stalled(130.9) is None


def test_a_wait_that_ended_early_holds_nothing_up() -> None:
    """A request is a wait of request_deadline + connect_timeout (125 s by default); one
    answered after 2 s is progress then, and a hang right after it is a stall after the bound,
    not after the request's deadline."""
    live = Liveness(bound=10)
    live.begin("reconcile", 0)
    token = live.open_wait(125, 1)
    live.close_wait(token, 3)
    assert live.stalled(12.9) is None
    assert live.stalled(13.5) is not None


def test_a_beat_elsewhere_does_not_cut_an_open_wait_short() -> None:
    """The delivery loop writes an ended import's outcomes on a second thread while the next
    batch's request is out: that commit's beat must not end the request's allowance."""
    live = Liveness(bound=10)
    live.begin("reconcile", 0)
    live.open_wait(125, 1)
    live.beat(2)
    assert live.stalled(100) is None


def test_hours_of_a_rate_limited_first_sync_are_never_a_stall() -> None:
    """Five hours at one call a second (Hello Customer): each call a pacing sleep then a
    request answered in 0.3 s, looked at every half second, with a bound of one second."""
    live = Liveness(bound=1)
    live.begin("reconcile", 0)
    t, looked = 0.0, 0.0
    while t < 5 * 3600:
        pace = live.open_wait(0.7, t)
        looked = _look(live, looked, t + 0.7)
        live.close_wait(pace, t + 0.7)
        call = live.open_wait(125, t + 0.7)
        looked = _look(live, looked, t + 1.0)
        live.close_wait(call, t + 1.0)
        live.beat(t + 1.0)  # its outcomes committed
        t += 1.0
    assert live.stalled(t + 1.5) is not None  # and then it hangs


def _look(live: Liveness, looked: float, until: float) -> float:
    while looked + 0.5 <= until:
        looked += 0.5
        assert live.stalled(looked) is None, looked
    return looked


def test_nested_jobs_name_the_innermost_and_end_in_turn() -> None:
    """The watch job runs its reconcile inside itself."""
    live = Liveness(bound=10)
    live.begin("watch", 0)
    live.begin("reconcile", 1)
    assert live.running == "reconcile"
    stall = live.stalled(20)
    assert stall is not None and stall.job == "reconcile"
    live.end(21)
    assert live.running == "watch"
    live.end(22)
    assert live.running is None and live.stalled(100) is None


def test_a_wait_left_open_by_the_last_job_does_not_shield_the_next() -> None:
    live = Liveness(bound=10)
    live.begin("pull", 0)
    live.open_wait(3600, 0)  # never closed
    live.end(1)
    live.begin("reconcile", 2)
    assert live.stalled(12.5) is not None


def test_the_module_wait_closes_whatever_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    live = Liveness(bound=10)
    monkeypatch.setattr(liveness, "LIVE", live)
    live.begin("reconcile", liveness.now())
    with pytest.raises(ValueError), liveness.waiting(3600):
        assert live.stalled(liveness.now() + 100) is None
        raise ValueError
    assert live.stalled(liveness.now() + 100) is not None


def test_the_system_clock_announces_its_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pacing, backoff, Retry-After and polls all sleep through `SystemClock.sleep`: inside
    a sleep of 100 s nothing is stalled until its end plus the bound; once it returned, the
    bound counts from then. (The sleep's own wait is a probe, and `now` stands at 0.)"""
    live = Liveness(bound=10)
    monkeypatch.setattr(liveness, "LIVE", live)
    monkeypatch.setattr(liveness, "now", lambda: 0.0)
    seen: list[tuple[float, bool, bool]] = []

    class Probe:
        def wait(self, seconds: float) -> bool:
            seen.append((seconds, live.stalled(105) is None, live.stalled(110.5) is None))
            return False  # slept its length: no stop request

    clock = SystemClock()
    clock.stop = Probe()  # type: ignore[assignment]
    live.begin("reconcile", 0)
    clock.sleep(100)
    assert seen == [(100, True, False)]
    assert live.stalled(9.9) is None and live.stalled(10.5) is not None


def test_a_commit_to_the_store_is_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each delivery batch's outcome, pull page, first-sync piece and prune batch commits."""
    live = Liveness(bound=10)
    monkeypatch.setattr(liveness, "LIVE", live)
    store = Store.open(tmp_path / "s.db")
    try:
        live.begin("pull", liveness.now() - 60)
        assert live.stalled(liveness.now()) is not None
        with store.write() as conn:
            conn.execute("SELECT 1")
        assert live.stalled(liveness.now()) is None
    finally:
        store.close()
