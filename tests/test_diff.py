"""The diff's look-up of fingerprints among the known ones, its writer thread, and the
suppression of opt-outs it reads from the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlite_utils import Database

from syncd.config import SuppressionConfig
from syncd.fastpath import FirstLines, Known, _finder
from syncd.state import Store
from syncd.state.diffed import DiffStore
from syncd.state.diffed import Writer as _Writer
from syncd.state.pulled import save_unsubscribe
from syncd.state.schema import migrations

FINGERPRINTS = st.integers(0, 2**63 - 1)


@given(
    known=st.lists(st.one_of(FINGERPRINTS, st.integers(-(2**63), -1), st.integers(0, 40))),
    wanted=st.lists(st.one_of(FINGERPRINTS, st.integers(0, 40))),
)
def test_every_fingerprint_is_found_where_it_is_and_no_other(
    known: list[int], wanted: list[int]
) -> None:
    # negative: a gone contact revived by hand; small ones crowd one bucket
    table = np.array(sorted(known), dtype=np.int64)
    hashes = np.array(wanted + known[:5], dtype=np.int64)
    hashes = hashes[hashes >= 0]  # what the scan looks up is never negative
    where, hit = _finder(table)(hashes)
    assert hit.tolist() == [h in known for h in hashes.tolist()]
    assert (table[where[hit]] == hashes[hit]).all()


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return conn


INSERT = "INSERT INTO t (k, v) SELECT value->>0, value->>1 FROM json_each(?)"


def test_the_writer_thread_writes_everything_before_the_block_ends() -> None:
    conn = _table()
    with _Writer(conn) as writer:
        for start in range(0, 10_000, 1000):
            writer.submit(INSERT, [(k, f"v{k}") for k in range(start, start + 1000)])
        writer.submit(INSERT, [])  # nothing to write: no statement
        writer.wait()  # (what reading a table whole waits for)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10_000,)
        writer.submit(INSERT, [(-1, "last")])
    assert conn.execute("SELECT count(*), sum(k) FROM t").fetchone() == (10_001, 49_994_999)
    writer.wait()  # returns at once once the writer is closed


def test_a_failed_write_is_raised_in_the_diffs_thread_and_stops_the_rest() -> None:
    conn = _table()
    with pytest.raises(sqlite3.IntegrityError), _Writer(conn) as writer:
        writer.submit(INSERT, [(1, "a")])
        writer.submit(INSERT, [(2, None)])  # NOT NULL
        writer.submit(INSERT, [(3, "c")])  # raises here, or is skipped: after a failure

    assert [k for (k,) in conn.execute("SELECT k FROM t")] == [1]


def test_an_error_in_the_diff_drops_the_writes_and_is_the_one_raised() -> None:
    conn = _table()
    with pytest.raises(ValueError, match="the diff failed"), _Writer(conn) as writer:
        writer.submit(INSERT, [(1, None)])  # fails too, but the diff's error is the news
        raise ValueError("the diff failed")
    assert not writer.thread.is_alive()


def test_an_opt_out_without_a_time_is_stored_untimed_and_still_suppresses(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    old = Database(path)  # a store from before untimed opt-outs, holding a timed one
    migrations.apply(old, stop_before="m008_unsubscribes_untimed")
    old.execute(
        "INSERT INTO unsubscribes VALUES ('signalvine', 'p0', 'CRM-0', NULL, '+32470000000', "
        "'sms', '2026-11-02T08:00:00+00:00', '2026-11-02T09:00:00+00:00')"
    )
    old.conn.commit()
    old.close()

    store = Store.open(path)
    try:
        table = store.db.table("unsubscribes")
        assert table.pks == ["vendor", "vendor_id"]
        indexes = {i.name for i in table.indexes if i.origin == "c"}
        assert indexes == {"unsubscribes_key", "unsubscribes_email", "unsubscribes_phone"}
        assert store.query("SELECT * FROM unsubscribes_per_week")[0]["week"] == "2026-W44"
        now = "2026-12-01T02:00:00+00:00"
        with store.write():
            for vendor_id, phone in (("p0", "+32470000000"), ("p1", "+32470111111")):
                record = {"vendor_id": vendor_id, "phone": phone, "channel": "sms", "at": None}
                save_unsubscribe(store.db, "signalvine", record, now)
        at = dict(store.conn.execute("SELECT vendor_id, at FROM unsubscribes"))
        assert at == {"p0": "2026-11-02T08:00:00+00:00", "p1": None}  # a later pull keeps a time

        reach = {"CRM-1": (None, "+32470111111"), "CRM-2": (None, "+32470222222")}
        found = DiffStore(store, 1, now, "export.csv").suppressions(
            SuppressionConfig().channels, reach
        )
        assert found == {"CRM-1": "unsubscribed at signalvine (sms) (date unknown)"}
    finally:
        store.close()


@given(batches=st.lists(st.lists(st.sampled_from([f"K{i}" for i in range(30)] + ["é", "\udcff"]))))
def test_first_lines_names_each_keys_first_line_as_a_dict_would(batches: list[list[str]]) -> None:
    firsts, reference, line = FirstLines(seed=7), dict[str, int](), 0
    for batch in batches:
        lines = list(range(line + 1, line + 1 + len(batch)))
        line += len(batch)
        expected = []
        for k, n in zip(batch, lines, strict=True):  # a repeat within the batch, too
            expected.append(reference.get(k, 0))
            reference.setdefault(k, n)
        assert firsts.first(batch, lines).tolist() == expected
    assert len(firsts.runs) <= max(1, len(reference)).bit_length() + 1


class FakeRows:
    """The contacts table as `Known` reads it: (rowid, fingerprint) → key."""

    def __init__(self, rows: dict[tuple[int, int], str]) -> None:
        self.rows = rows

    def cached(self) -> np.ndarray | None:
        return None

    def cached_rowids(self, at: np.ndarray) -> np.ndarray | None:
        return None

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = sorted((fp, rowid) for rowid, fp in self.rows)
        return (
            np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64),
        )

    def key_at(self, rowid: int, rhash: int) -> str | None:
        return self.rows.get((rowid, rhash))


def test_a_repeat_of_a_replaced_row_is_named_by_the_key_its_new_row_has() -> None:
    """Known row 20 (key K2) is replaced by a changed row on line 3; its old text then
    comes again on line 9: a repeat of line 3's key, whose row now has the new fingerprint."""
    rows = FakeRows({(1, 10): "K1", (2, 20): "K2", (3, 30): "K3"})
    known = Known(rows)
    assert known.see(np.array([0]), np.array([1])) == (1, [])  # K1 unchanged on line 1
    first, replaces = known.claim(20, 3)
    assert (first, replaces) == (0, 1)
    rows.rows[(2, 99)] = rows.rows.pop((2, 20))  # the diff rewrote K2's row
    known.add(99, 2, replaces)
    assert known.see(np.array([1]), np.array([9])) == (0, [(9, "K2", 3)])
    count, slices = known.after()
    live, rowids = (np.concatenate(parts).tolist() for parts in zip(*slices, strict=True))
    assert (count, live, rowids) == (2, [10, 99], [1, 2])  # K3 is gone
