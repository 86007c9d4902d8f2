"""A first sync commits as it goes (`syncd.diff.PIECE`), so its WAL holds one piece, and
is still all or nothing: a refused or failed one leaves no contact, delivery or
acknowledgement behind, and nothing of it is sent. (A kill between pieces, undone by the
next run: tests/test_crash.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syncd.diff
import syncd.source
from syncd.errors import GuardError
from syncd.sample import rows, write_export
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state.diffed import DiffStore
from tests.helpers import World, esputnik_table

ROWS = 200


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, ESputnikSim]]:
    monkeypatch.setattr(syncd.diff, "CHUNK", 20)
    monkeypatch.setattr(syncd.diff, "PIECE", 40)
    monkeypatch.setattr(syncd.source, "RAW_BYTES", 4096)  # the file is read in several blocks
    sim = ESputnikSim()
    with Server(sim) as server:
        yield World(tmp_path, {"esputnik": esputnik_table(server.url)}), sim


def counts(w: World) -> dict[str, int]:
    conn = sqlite3.connect(w.folder / "syncd.db")
    try:
        tables = ("contacts", "deliveries", "vendor_state", "quarantine", "unfinished_diff")
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        conn.close()


def generations(w: World) -> int:
    conn = sqlite3.connect(w.folder / "syncd.db")
    try:
        return int(conn.execute("SELECT generation FROM contacts_generation").fetchone()[0])
    finally:
        conn.close()


def export_bytes(tmp: Path, n: int) -> bytes:
    write_export(tmp / "made.csv", list(rows(n)))
    return (tmp / "made.csv").read_bytes()


def test_a_first_sync_commits_in_pieces_and_ends_whole(world: tuple[World, ESputnikSim]) -> None:
    w, sim = world
    w.export.write_bytes(export_bytes(w.folder, ROWS))
    report = w.sync()
    assert report.exit_code == 0, report.summary()
    # a commit per piece of 40 new contacts moved the generation on, besides the end's
    assert generations(w) >= ROWS // 40
    assert counts(w) == {
        "contacts": ROWS,
        "deliveries": ROWS,
        "vendor_state": ROWS,
        "quarantine": 0,
        "unfinished_diff": 0,
    }
    assert len(sim.contacts()) == ROWS
    # the next diff trusts the cache written at the end: every row unchanged, nothing sent
    again = w.sync()
    assert again.plan is not None and again.plan.unchanged == ROWS
    assert len(sim.contacts()) == ROWS


def test_a_cut_first_export_is_refused_whole_though_pieces_were_committed(
    world: tuple[World, ESputnikSim],
) -> None:
    """The cut is found at the file's end, after four pieces were committed."""
    w, sim = world
    w.export.write_bytes(export_bytes(w.folder, ROWS)[:-30])  # the last record loses its end
    with pytest.raises(GuardError, match="ends mid-record"):
        w.sync()
    assert counts(w) == dict.fromkeys(counts(w), 0)
    assert sim.contacts() == []
    w.export.write_bytes(export_bytes(w.folder, ROWS))
    assert w.sync().exit_code == 0
    assert len(sim.contacts()) == ROWS


def test_a_first_sync_failing_half_way_leaves_nothing(
    world: tuple[World, ESputnikSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises after pieces were committed (a bug, a full disk, Ctrl-C)."""
    w, sim = world
    w.export.write_bytes(export_bytes(w.folder, ROWS))
    write = DiffStore.contacts
    calls = []

    def failing(self: DiffStore, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 8:  # after three pieces of 40
            raise RuntimeError("the disk caught fire")
        write(self, *args)

    monkeypatch.setattr(DiffStore, "contacts", failing)
    with pytest.raises(RuntimeError):
        w.sync()
    assert counts(w) == dict.fromkeys(counts(w), 0)
    assert sim.contacts() == []


def test_a_dry_run_and_a_later_diff_never_commit_in_pieces(
    world: tuple[World, ESputnikSim],
) -> None:
    w, sim = world
    w.export.write_bytes(export_bytes(w.folder, ROWS))
    before = generations(w) if (w.folder / "syncd.db").exists() else 0
    w.sync(dry_run=True)
    assert counts(w)["contacts"] == 0
    assert generations(w) == before  # rolled back whole: no piece was committed
    w.sync()
    w.export.write_bytes(export_bytes(w.folder, ROWS * 2))  # 200 more contacts, in one transaction
    before = generations(w)
    assert w.sync().exit_code == 0
    assert generations(w) == before + 1
    assert len(sim.contacts()) == ROWS * 2
