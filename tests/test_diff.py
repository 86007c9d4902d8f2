"""The diff's look-up of fingerprints among the known ones, its writer thread, and the
suppression of opt-outs it reads from the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from syncd import fastpath
from syncd.config import SuppressionConfig
from syncd.fastpath import FirstLines, Known, _finder
from syncd.state import Store, diffed
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


@given(
    known=st.lists(st.one_of(FINGERPRINTS, st.integers(-(2**63), -1), st.integers(0, 40))),
    wanted=st.lists(st.one_of(FINGERPRINTS, st.integers(0, 40))),
)
def test_the_finder_counted_a_few_fingerprints_at_a_time_finds_the_same(
    known: list[int], wanted: list[int]
) -> None:
    """Its table is counted a slice of the known at a time: a bucket across two slices
    still starts and ends where it does."""
    table = np.array(sorted(known), dtype=np.int64)
    hashes = np.array([h for h in wanted + known if h >= 0], dtype=np.int64)
    with patch.object(fastpath, "_SLICE", 3):
        where, hit = _finder(table)(hashes)
    assert hit.tolist() == [h in known for h in hashes.tolist()]
    assert (table[where[hit]] == hashes[hit]).all()


def test_a_crowd_in_one_bucket_makes_the_finder_hold_the_starts_themselves() -> None:
    """40,000 revived gone contacts (negative fingerprints) all start past their share of
    the known by more than 16 bits hold: found all the same."""
    rng = np.random.default_rng(5)
    positive = rng.integers(0, 2**63, 1000)
    table = np.sort(np.concatenate([-np.arange(1, 40_001), positive]))
    where, hit = _finder(table)(np.concatenate([positive, positive + 1]))
    assert hit.tolist() == [True] * 1000 + (np.isin(positive + 1, table)).tolist()
    assert (table[where[:1000]] == positive).all()


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


NAMES = st.text(st.sampled_from('ab"é.$ \\\x01'), min_size=1, max_size=4)


@settings(deadline=None, max_examples=60)  # a store is opened (migrated) per example
@given(
    header=st.lists(NAMES, min_size=1, max_size=5, unique=True),
    data=st.data(),
)
def test_renaming_columns_in_attributes_is_renaming_them_by_position(
    tmp_path_factory: pytest.TempPathFactory, header: list[str], data: st.DataObject
) -> None:
    """Any renames, swaps included, and names a JSON path cannot hold (`"`), give each
    contact's attributes as the row would under the new header, in one statement."""
    new = data.draw(st.permutations(header)) if data.draw(st.booleans()) else list(header)
    new = [data.draw(st.sampled_from([n, n + "2"])) for n in new]
    if len(set(new)) < len(new):
        return
    renames = {o: n for o, n in zip(header, new, strict=True) if o != n}
    store = Store.open(tmp_path_factory.mktemp("rename") / "s.db")
    try:
        rows = [[f"v{i}{j}" for j in range(len(header))] for i in range(3)]
        with store.write() as c:
            for i, row in enumerate(rows):
                c.execute(
                    "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at) "
                    "VALUES (?, ?, 1, 't', 't')",
                    (str(i), json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False)),
                )
            c.execute(
                "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at) "
                "VALUES ('other', '{\"x\":\"y\"}', 1, 't', 't')"
            )
            if renames:
                assert DiffStore(store, 1, "t", "").rename(renames) == len(rows)
        got = {
            r["key"]: json.loads(r["attributes"])
            for r in store.query("SELECT key, attributes FROM contacts")
        }
    finally:
        store.close()
    for i, row in enumerate(rows):
        assert got[str(i)] == dict(zip(new, row, strict=True))
    assert got["other"] == {"x": "y"}


class CachedRows(FakeRows):
    """`FakeRows` with a current cache: each known fingerprint's rowid, read where asked."""

    def __init__(self, rows: dict[tuple[int, int], str]) -> None:
        super().__init__(rows)
        self.fps, self.rowids = self.live()
        self.asked = 0  # rowids read from the cache

    def cached(self) -> np.ndarray | None:
        return self.fps.copy()

    def cached_rowids(self, at: np.ndarray) -> np.ndarray | None:
        assert (np.diff(at) > 0).all()  # ascending, as the blob is read
        self.asked += len(at)
        return self.rowids[at]


@given(
    fps=st.lists(st.integers(-(2**63), 2**63 - 1), unique=True, max_size=60),
    data=st.data(),
    slice_=st.integers(1, 8),
)
def test_the_next_cache_written_a_slice_at_a_time_is_the_one_shot_merge(
    fps: list[int], data: st.DataObject, slice_: int
) -> None:
    """Kept (seen, not replaced) fingerprints merged with the added ones, in order, each with
    its rowid, however the slices fall; as sorting all of them at once would give."""
    split = data.draw(st.integers(0, len(fps)))
    known, extra = fps[:split], fps[split:]
    rows = CachedRows({(100 + i, fp): f"K{i}" for i, fp in enumerate(known)})
    k = Known(rows)
    seen = data.draw(st.lists(st.booleans(), min_size=len(known), max_size=len(known)))
    lines = [line for line, s in enumerate(seen, 1) if s]
    k.see(np.array([i for i, s in enumerate(seen) if s], dtype=np.int64), np.array(lines))
    replaced = [i for i, s in enumerate(seen) if s and data.draw(st.booleans())]
    expected = {(int(k.fps[i]), int(rows.rowids[i])) for i, s in enumerate(seen) if s}
    for n, fp in enumerate(extra):
        replaces = replaced.pop() if replaced and data.draw(st.booleans()) else -1
        if replaces >= 0:
            expected.discard((int(k.fps[replaces]), int(rows.rowids[replaces])))
        rowid = int(rows.rowids[replaces]) if replaces >= 0 else 1000 + n
        k.add(fp, rowid, replaces)
        expected.add((fp, rowid))
    with patch.object(fastpath, "_SLICE", slice_):
        count, slices = k.after()
        parts = list(slices)
    live = [int(v) for fps_, _ in parts for v in fps_]
    rowids = [int(v) for _, r in parts for v in r]
    assert all(f.dtype == np.dtype("<i8") and r.dtype == np.dtype("<i8") for f, r in parts)
    assert count == len(live) == len(rowids)
    assert list(zip(live, rowids, strict=True)) == sorted(expected)


def test_a_renumbered_row_is_caught_when_a_repeat_is_named_and_read_again_once() -> None:
    """A cached rowid naming another contact's row (a VACUUM renumbered them) is caught by
    its fingerprint: the table is read once, and the key is the right one."""
    rows = CachedRows({(1, 10): "K1", (2, 20): "K2", (3, 30): "K3"})
    rows.rowids = np.array([3, 1, 2], dtype=np.int64)  # the cache's rowids, all wrong
    known = Known(rows)
    assert known.see(np.array([1]), np.array([4])) == (1, [])
    assert known.see(np.array([1]), np.array([7])) == (0, [(7, "K2", 4)])
    assert known.renumbered and rows.asked == 1
    assert known.located(np.array([0, 2])) == ([1, 3], [10, 30])


def test_the_cache_is_written_beside_the_one_read_and_its_rowids_read_in_stretches(
    tmp_path: Path,
) -> None:
    """The next cache goes into the other row while the current one's rowids are read as it
    is written; then the current one is the only row, and scattered rowids read a window at
    a time are the blob's."""
    store = Store.open(tmp_path / "syncd.db")
    try:
        with store.write() as c:
            db = DiffStore(store, 1, "2026-12-01T02:00:00+00:00", "export.csv")
            values = np.arange(50, dtype="<i8")
            db.write_cache(
                50, [(values[:20] * 2, values[:20] + 7), (values[20:] * 2, values[20:] + 7)]
            )
            first = c.execute("SELECT id FROM fingerprint_cache").fetchall()
            db = DiffStore(store, 2, "2026-12-01T03:00:00+00:00", "export.csv")
            assert db.cached().tolist() == (values * 2).tolist()
            with patch.object(diffed, "_BLOB_VALUES", 4):
                at = np.array([0, 1, 5, 6, 7, 30, 49])
                assert db.cached_rowids(at).tolist() == (at + 7).tolist()
                assert db.cached_rowids(np.array([], dtype=np.int64)).tolist() == []
                slices = (
                    (db.cached_rowids(np.arange(i, i + 10)), np.arange(i, i + 10))
                    for i in range(0, 50, 10)
                )
                db.write_cache(
                    50, ((np.asarray(r, dtype="<i8"), a.astype("<i8")) for r, a in slices)
                )
            assert c.execute("SELECT id FROM fingerprint_cache").fetchall() != first
            assert c.execute("SELECT count(*) FROM fingerprint_cache").fetchone() == (1,)
            assert db.cached_rowids(np.arange(50)).tolist() == values.tolist()
            with pytest.raises(AssertionError):  # fewer than said: refused
                db.write_cache(3, [(values[:2], values[:2])])
    finally:
        store.close()
