"""A pull on a machine whose clock was wrong.

Hello Customer's cursor is the end of the last window read, and a window ends at this
machine's `now`. A pull made while the clock ran ahead (a VM restored from a snapshot, an
RTC set wrong at boot) moved the cursor into a future the vendor had not reached; once the
clock is put right, every answer the vendor timestamps before that future is behind the
cursor and was never read, and every later pull said ok. Now a cursor further ahead of the
clock than the slack below stops its stream with what to do, and `--since` reads again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import SyncdError
from syncd.pull import AHEAD, pull
from syncd.sandbox.base import Server
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import SignalVineSim
from syncd.state import Store
from syncd.vendors import hellocustomer
from tests.test_pull_adversary import hc_config, sv_config

REAL = datetime.now(UTC).replace(microsecond=0)


class Skewed(FakeClock):
    """This machine's clock: the vendor's, `offset` wrong (waiting on it waits on both)."""

    def __init__(self, truth: FakeClock, offset: timedelta) -> None:
        self.truth, self.offset = truth, offset

    def monotonic(self) -> float:
        return self.truth.monotonic()

    def sleep(self, seconds: float) -> None:
        self.truth.sleep(seconds)

    def now(self) -> datetime:
        return self.truth.now() + self.offset


@pytest.fixture
def vendor() -> Iterator[tuple[HelloCustomerSim, Server, FakeClock]]:
    truth = FakeClock(REAL)  # the vendor's clock: right all along
    sim = HelloCustomerSim(clock=truth.monotonic, now=truth.now)
    with Server(sim) as server:
        yield sim, server, truth


def stored(path: Path) -> tuple[list[str], str | None]:
    store = Store.open(path)
    try:
        ids = [r[0] for r in store.query("SELECT response_id FROM responses ORDER BY 1")]
        cursor = store.scalar("SELECT cursor FROM cursors WHERE stream = 'responses'")
        return ids, cursor
    finally:
        store.close()


def test_a_cursor_left_ahead_by_a_wrong_clock_stops_its_stream_until_read_again(
    tmp_path: Path, vendor: tuple[HelloCustomerSim, Server, FakeClock]
) -> None:
    sim, server, truth = vendor
    cfg = hc_config(tmp_path, server.url, '["responses"]')
    early = sim.add_responses(2, REAL - timedelta(hours=5), REAL - timedelta(hours=4))

    ahead = Skewed(truth, timedelta(days=3))  # this machine's clock, three days fast
    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, ahead).exit_code == 0
    finally:
        store.close()
    assert stored(cfg.store.path)[0] == sorted(early)

    # the clock is put right; the vendor gets answers the wrong cursor has already passed
    truth.sleep(3600)
    later = sim.add_responses(2, REAL + timedelta(minutes=10), REAL + timedelta(minutes=20))
    right = Skewed(truth, timedelta(0))
    _, cursor = stored(cfg.store.path)
    store = Store.open(cfg.store.path)
    try:
        report = pull(cfg, store, right)
    finally:
        store.close()
    assert report.exit_code == 1, report.summary()
    error = report.vendors["hellocustomer"].errors["responses"]
    assert "ahead of this machine's clock" in error
    assert "syncd pull --vendor hellocustomer --since" in error
    assert stored(cfg.store.path)[1] == cursor  # not moved on as if all were read

    store = Store.open(cfg.store.path)
    try:
        again = pull(cfg, store, right, since=REAL.date())
    finally:
        store.close()
    assert again.exit_code == 0, again.summary()
    ids, cursor = stored(cfg.store.path)
    assert ids == sorted(early + later)
    assert cursor is not None
    assert datetime.fromisoformat(cursor) <= right.now()

    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, right).exit_code == 0  # and the next pull is itself again
    finally:
        store.close()


def test_a_cursor_a_little_ahead_is_read_on(
    tmp_path: Path, vendor: tuple[HelloCustomerSim, Server, FakeClock]
) -> None:
    """Within the slack (two clocks a few minutes apart, a cursor of the vendor's own time),
    nothing is refused."""
    sim, server, truth = vendor
    cfg = hc_config(tmp_path, server.url, '["responses"]')
    sim.add_responses(2, REAL - timedelta(hours=5), REAL - timedelta(hours=4))
    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, Skewed(truth, AHEAD / 2)).exit_code == 0
        assert pull(cfg, store, Skewed(truth, timedelta(0))).exit_code == 0
    finally:
        store.close()


def test_a_since_after_today_is_refused_before_any_cursor_moves(tmp_path: Path) -> None:
    """`--since 2099-01-01` (a typo for 2019): SignalVine's cursor is where the read started
    when nothing was read, so it went to 2099 and every later pull was refused as a cursor
    ahead of the clock. Now the date is refused, naming it, and nothing is written."""
    clock = FakeClock(REAL)
    with Server(SignalVineSim(now=clock.now)) as server:
        cfg = sv_config(tmp_path, server.url)
        store = Store.open(cfg.store.path)
        try:
            with pytest.raises(SyncdError, match=r"^--since 2099-01-01 is after today") as caught:
                pull(cfg, store, clock, since=date(2099, 1, 1))
            assert caught.value.exit_code == 2
            assert store.scalar("SELECT count(*) FROM cursors") == 0
            assert store.scalar("SELECT count(*) FROM runs") == 0
            assert pull(cfg, store, clock).exit_code == 0  # and the next pull reads on
        finally:
            store.close()


def test_with_no_lookback_an_answer_given_before_a_cursor_a_little_ahead_is_read(
    tmp_path: Path, vendor: tuple[HelloCustomerSim, Server, FakeClock]
) -> None:
    """`lookback_days = 0`, and this machine's clock a few minutes ahead of Hello Customer's
    (within the slack: no pull refuses it). A window ends at this machine's now, so each
    cursor was a few minutes in the vendor's future: an answer the vendor took in those
    minutes, after the pull, was before the next pull's start and never read, at every
    pull. The re-read now covers the slack a cursor may be ahead by."""
    sim, server, truth = vendor
    hc_config(tmp_path, server.url, '["responses"]')
    toml = tmp_path / "syncd.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace("lookback_days = 1", "lookback_days = 0"),
        encoding="utf-8",
    )
    cfg = load(toml)
    ahead = Skewed(truth, timedelta(minutes=10))
    early = sim.add_responses(1, REAL - timedelta(hours=2), REAL - timedelta(hours=2))
    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, ahead).exit_code == 0
        truth.sleep(120)  # the vendor takes an answer after that pull, at its own 2 min later
        late = sim.add_responses(1, truth.now(), truth.now())
        truth.sleep(1800)
        report = pull(cfg, store, ahead)
        assert report.exit_code == 0, report.summary()
    finally:
        store.close()
    assert stored(cfg.store.path)[0] == sorted(early + late)
    assert hellocustomer.SLACK >= AHEAD  # the re-read covers what a pull lets pass
