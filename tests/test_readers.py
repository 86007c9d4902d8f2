"""Analysts beside the writer: long readers never make a sync fail, and the WAL shrinks
back once they are gone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, esputnik_table

# one analyst: long read transactions over the whole store, again and again
READER = """
import sqlite3, sys, time, pathlib
db, stop = sys.argv[1], pathlib.Path(sys.argv[2])
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
while not stop.exists():
    conn.execute("BEGIN")
    conn.execute("SELECT count(*), sum(length(payload)) FROM deliveries").fetchone()
    conn.execute("SELECT count(*) FROM contacts c JOIN deliveries d ON d.key = c.key").fetchone()
    time.sleep(0.3)  # hold the snapshot, as a slow notebook would
    conn.execute("COMMIT")
conn.close()
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Server(ESputnikSim()) as server:
        yield World(tmp_path, {"esputnik": esputnik_table(server.url)})


def wal(world: World) -> int:
    path = world.folder / "syncd.db-wal"
    return path.stat().st_size if path.exists() else 0


def test_four_readers_never_lock_out_the_writer_and_the_wal_shrinks_after(world: World) -> None:
    world.write(list(rows(200)))
    assert world.sync().exit_code == 0  # the store exists for the readers
    stop = world.folder / "stop-readers"
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(world.folder / "syncd.db"), str(stop)])
        for _ in range(4)
    ]
    try:
        time.sleep(0.5)
        world.write(list(rows(10_000)))
        report = world.sync()  # 9,800 new deliveries written and settled under the readers
        assert report.exit_code == 0, report.summary()
        assert report.delivered["esputnik"].counts["sent"] >= 9_000
        grown = wal(world)
    finally:
        stop.touch()
        for proc in readers:
            assert proc.wait(timeout=30) == 0
    assert grown > 1024 * 1024  # the readers' snapshots kept the WAL from being reset
    world.store().close()  # any later close, with no reader left, folds and truncates it
    assert wal(world) == 0
