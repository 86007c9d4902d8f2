"""The forked scan: the same items as in this process, failures as SyncdErrors, no child
left behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import diff, source
from syncd.errors import SourceError
from syncd.parallel import forked
from syncd.sample import rows
from tests.helpers import World


def numbers(n: int, fail_at: int | None = None) -> Iterator[dict[str, object]]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"broken at {i}")
        yield {"i": i, "payload": [str(i)] * 50}


def test_items_arrive_in_order_and_complete() -> None:
    assert list(forked(numbers(5000), what="counting")) == list(numbers(5000))


def test_an_error_in_the_child_is_raised_here_with_what_was_being_done() -> None:
    got = []
    with pytest.raises(SourceError, match=r"reading x\.csv: ValueError: broken at 7"):
        for item in forked(numbers(10, fail_at=7), what="reading x.csv"):
            got.append(item["i"])
    assert got == list(range(7))


def killed_midway() -> Iterator[int]:
    yield 1
    os.kill(os.getpid(), signal.SIGKILL)
    yield 2


def test_a_child_that_dies_is_an_error_not_a_short_read() -> None:
    with pytest.raises(SourceError, match="ended without finishing"):
        list(forked(killed_midway(), what="reading"))


def test_stopping_early_kills_the_child() -> None:
    items = forked(numbers(1_000_000), what="counting")
    assert next(items)["i"] == 0
    items.close()  # the consumer gives up (an error, a guard): the finally kills the child
    assert not [c for c in __import__("multiprocessing").active_children() if c.is_alive()]


@pytest.mark.parametrize("fork", [True, False])
def test_a_sync_gives_the_same_plan_forked_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    from syncd.sandbox.base import Server
    from syncd.sandbox.esputnik import ESputnikSim
    from tests.helpers import esputnik_table

    monkeypatch.setattr(diff, "FORK_ABOVE", 0 if fork else 1 << 62)
    monkeypatch.setattr(source, "RAW_BYTES", 8192)  # many blocks, so many parts
    with Server(ESputnikSim()) as server:
        world = World(tmp_path, {"esputnik": esputnik_table(server.url)})
        data = list(rows(3000))
        world.write(data)
        assert world.sync().exit_code == 0
        data[5][1] += "x"  # a change
        data[9] = data[8]  # a known row twice in one part
        data[11][0] = ""  # no key
        del data[20:30]  # gone
        world.write([*data, *rows(7, start=5000), data[100]])  # new ones, a row again far on
        report = world.sync()
        plan = report.plan
        assert plan is not None
        assert (plan.rows_read, plan.quarantined, plan.unchanged, plan.gone) == (2998, 3, 2987, 12)
        assert plan.counts()["esputnik"]["new"] == 7
        assert plan.counts()["esputnik"]["changed"] == 1
