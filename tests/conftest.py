"""Shared fixtures. Every store a test opens gets `PRAGMA integrity_check` at teardown."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from syncd import log as logmod
from syncd.state import Store


@pytest.fixture(autouse=True)
def _integrity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: set[Path] = set()
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    def tracking_open(cls: type[Store], path: Path, **kw: object) -> Store:
        opened.add(Path(path))
        return real_open(cls, path, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Store, "open", classmethod(tracking_open))
    yield
    for path in opened:
        if path.exists():
            conn = sqlite3.connect(path)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path
                assert_fingerprint_cache_holds(conn)
            finally:
                conn.close()


def assert_fingerprint_cache_holds(conn: sqlite3.Connection) -> None:
    """A fingerprint cache that claims to be current is exactly the live contacts': their
    fingerprints in order, each with its contact's rowid."""
    try:
        cached = conn.execute(
            "SELECT live, rowids FROM fingerprint_cache JOIN contacts_generation USING (generation)"
        ).fetchone()
    except sqlite3.OperationalError:
        return  # not a syncd store
    # set only inside the diff's own transaction: committed, it would hide every change
    assert conn.execute("SELECT in_diff FROM contacts_generation").fetchone() == (0,)
    if cached:
        live = conn.execute("SELECT rhash, rowid FROM contacts WHERE gone_at IS NULL").fetchall()
        pairs = zip(*(np.frombuffer(blob, dtype="<i8").tolist() for blob in cached), strict=True)
        assert list(pairs) == sorted(live)


@pytest.fixture(autouse=True)
def _logging() -> None:
    logmod.configure(level="DEBUG", json=True)
