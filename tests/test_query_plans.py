"""No statement a `syncd sync` runs on every night scans a big table.

A real sync runs against the eSputnik simulator on a store built by `Store.open` (its
migrations, no ANALYZE: syncd never runs ANALYZE nor `PRAGMA optimize`, so the planner
works from the schema alone, as it does on an operator's store). Every statement of the
syncs is traced (`set_trace_callback` gives it with its values bound) and its EXPLAIN QUERY
PLAN read on the store afterwards. A `SCAN` of deliveries, contacts, vendor_state or
unsubscribes (a whole table, or a whole index of it) is a finding, except:

- a scan of the partial index `deliveries_open`: it holds only open work (pending, in
  flight, failed, unknown, dead), so it costs what is left to do, nothing when none is;
- `ALLOWED`: the statements that visit every row by nature, each with its reason;
- `KNOWN`: findings in files this test's owner does not own, each pinned by a strict
  xfail test below, so that the fix flips it (then delete the entry and the xfail).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.state.pulled import match_key
from tests.helpers import World, esputnik_table

BIG = ("deliveries", "contacts", "vendor_state", "unsubscribes")
BOUNDED_INDEXES = ("deliveries_open",)  # partial indexes of open work

# statement (regex on its normalised text) → why it must visit every row
ALLOWED: dict[str, str] = {
    r"^SELECT rhash, rowid FROM contacts WHERE gone_at IS NULL$": (
        "the diff's fingerprint read, once when its cache is stale: it compares every live "
        "contact with the export"
    ),
}

# statement → the finding, for a file this test's owner does not own (see the xfails)
UNSUBSCRIBE_LOOKUP = (
    r"^SELECT key, email, phone, vendor, channel, at FROM unsubscribes WHERE key IN"
)
KNOWN: dict[str, str] = {}


def normalise(sql: str) -> str:
    """A statement with its literals as `?` and IN lists collapsed, one space apart."""
    sql = re.sub(r"'[^']*'|\b\d+(?:\.\d+)?\b", "?", sql)  # '' inside: two literals, one ?
    sql = re.sub(r"\(\s*\?(?:\s*,\s*\?)*\s*\)", "(?)", sql)
    return re.sub(r"\s+", " ", sql).strip()


def _names(sql: str, tables: tuple[str, ...]) -> set[str]:
    """The `tables` a statement reads and the aliases it gives them."""
    names = set()
    for m in re.finditer(rf"\b({'|'.join(tables)})\b(?:\s+(?:AS\s+)?(\w+))?", sql, re.I):
        names.add(m[1].lower())
        if m[2] and m[2].upper() not in {
            "WHERE", "JOIN", "LEFT", "ON", "INDEXED", "SET", "USING", "GROUP", "ORDER",
            "LIMIT", "WINDOW", "VALUES", "SELECT", "AND", "OR", "INNER", "CROSS", "DO",
        }:  # fmt: skip
            names.add(m[2])
    return names


def scans(
    conn: sqlite3.Connection,
    sql: str,
    tables: tuple[str, ...] = BIG,
    bounded: tuple[str, ...] = BOUNDED_INDEXES,
) -> list[str]:
    """The plan lines of `sql` that scan one of `tables` or a whole index of one, but for
    the `bounded` partial indexes."""
    names = _names(sql, tables)
    found = []
    for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
        detail: str = row[3]
        m = re.match(r"SCAN (\w+)", detail)
        if not m or m[1] not in names:
            continue
        if any(re.search(rf"USING (COVERING )?INDEX {i}\b", detail) for i in bounded):
            continue
        found.append(detail)
    return found


def trace_statements(mp: pytest.MonkeyPatch) -> list[str]:
    """The list every statement run on a store opened from now on is appended to, with its
    values bound (`set_trace_callback`), for `scans` to explain afterwards."""
    statements: list[str] = []
    real_open = Store.open

    def traced_open(cls: type[Store], /, path: Path, **kw: object) -> Store:
        store = real_open(path, **kw)  # type: ignore[arg-type]
        store.conn.set_trace_callback(statements.append)
        return store

    mp.setattr(Store, "open", classmethod(traced_open))
    return statements


class Traced:
    """Every statement the syncs ran, and the store to explain them on."""

    def __init__(self, db: Path, statements: list[str]) -> None:
        self.db = db
        # normalised → one instance as run (with its values)
        self.statements: dict[str, str] = {}
        for sql in statements:
            if re.match(r"\s*(SELECT|WITH|UPDATE|DELETE|INSERT|REPLACE)\b", sql, re.I):
                self.statements.setdefault(normalise(sql), sql)

    @functools.cached_property
    def findings(self) -> dict[str, list[str]]:
        """Each statement (normalised) that scans a big table → its scanning plan lines."""
        conn = sqlite3.connect(self.db)
        try:
            found = {norm: scans(conn, sql) for norm, sql in self.statements.items()}
            return {norm: lines for norm, lines in found.items() if lines}
        finally:
            conn.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """Three syncs, traced: the first (every contact new), one with changes, gone rows and a
    refused contact (failed deliveries), and one that retries it with nothing else to do."""
    folder = tmp_path_factory.mktemp("plans")
    app = ESputnikSim()
    with pytest.MonkeyPatch.context() as mp, Server(app) as server:
        statements = trace_statements(mp)
        world = World(folder, {"esputnik": esputnik_table(server.url)})
        data = list(rows(600))
        world.write(data)
        assert world.sync().exit_code == 0
        app.faults.reject(data[9][3].strip().lower(), "mailbox does not exist")
        for r in data[::9]:
            r[1] += "x"  # a changed first name
        world.write(data[:-7])  # 7 gone
        assert world.sync().exit_code == 1  # the refused contact failed
        assert world.sync().exit_code == 1  # retried, refused again
    with sqlite3.connect(folder / "syncd.db") as conn:  # as a real store: no ANALYZE
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchall()
            == []
        )
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] > 600
        assert (
            conn.execute("SELECT count(*) FROM deliveries WHERE status = 'failed'").fetchone()[0]
            == 1
        )
    yield Traced(folder / "syncd.db", statements)


def _matching(findings: dict[str, list[str]], patterns: dict[str, str]) -> dict[str, list[str]]:
    return {s: p for s, p in findings.items() if any(re.search(r, s) for r in patterns)}


def test_the_trace_holds_the_statements_of_a_sync(traced: Traced) -> None:
    """The trace is real: it holds the run's start, the diff, the delivery loop, the backlog
    and the run's reasons (else the test below would pass on nothing)."""
    text = "\n".join(traced.statements)
    for needle in (
        "INSERT INTO runs",
        "UPDATE runs SET status = ?, message",
        "FROM digest_definitions",
        "FROM vendor_state WHERE vendor = ? AND key IN",
        "FROM deliveries d INDEXED BY deliveries_open",  # Store.pending
        "d.status = ? AND d.status IN",  # Store.in_flight
        "FROM delivery_backlog",
        "FROM deliveries WHERE status = ? AND run_id = ?",  # run_reasons' skips
        "AND updated_at >= ?",  # run_reasons' problems
        "UPDATE runs SET finished_at",
    ):
        assert needle in text, needle


def test_no_statement_of_a_sync_scans_a_big_table(traced: Traced) -> None:
    findings = traced.findings
    unexplained = {
        s: p
        for s, p in findings.items()
        if s not in _matching(findings, ALLOWED) and s not in _matching(findings, KNOWN)
    }
    assert unexplained == {}
    # every allow-list entry is still needed (a fixed statement leaves the list)
    for pattern in ALLOWED:
        assert any(re.search(pattern, s) for s in findings), pattern


def test_requeue_failed_searches_the_open_index(traced: Traced) -> None:
    """Store.requeue_failed runs on every sync for every vendor; its two UPDATEs reach the
    failed deliveries through deliveries_open (they scanned every delivery until its own IN
    term was added)."""
    requeue = (
        r"^UPDATE deliveries SET status = \?, updated_at = \? WHERE vendor = \? AND status = \?"
    )
    assert len([s for s in traced.statements if re.search(requeue, s)]) == 2
    assert _matching(traced.findings, {requeue: ""}) == {}


def test_the_unsubscribe_lookup_searches_indexes(traced: Traced) -> None:
    assert _matching(traced.findings, {UNSUBSCRIBE_LOOKUP: ""}) == {}


def test_scans_tells_a_scan_from_a_search(tmp_path: Path) -> None:
    """The detector itself: a whole-table scan, a whole non-partial index scan and an aliased
    scan are found; a search by index and a scan of deliveries_open are not."""
    store = Store.open(tmp_path / "s.db")
    try:
        conn = store.conn
        assert scans(conn, "SELECT * FROM deliveries WHERE reason = 'x'") == ["SCAN deliveries"]
        assert scans(conn, "SELECT d.id FROM deliveries AS d WHERE d.payload = 'x'") == ["SCAN d"]
        assert scans(conn, "SELECT key FROM vendor_state WHERE hash = 'x'") != []
        assert scans(conn, "SELECT * FROM deliveries WHERE id = 1") == []
        assert scans(conn, "SELECT * FROM deliveries WHERE key = 'k' AND vendor = 'v'") == []
        assert scans(conn, "SELECT vendor, status, n FROM delivery_backlog") == []
        assert scans(conn, "SELECT count(*) FROM runs") == []  # not a big table
    finally:
        store.close()


def test_a_pulled_record_matched_by_phone_or_email_searches_an_index(tmp_path: Path) -> None:
    """`match_key` runs once per pulled record that our key did not match: by phone it
    scanned every contact (no index on `contacts.phone` before m023), 19 s for a pull of
    1,000 SMS opt-outs at 200k contacts. Its ORDER BY (sent to the vendor, then still in
    the export) sorts the contacts sharing the number, found through the index."""
    store = Store.open(tmp_path / "s.db")
    try:
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        assert match_key(store.conn, "signalvine", None, None, "+32470123456") is None
        assert match_key(store.conn, "signalvine", None, "a@b.co", None) is None
        store.conn.set_trace_callback(None)
        looked = [s for s in statements if "FROM contacts c WHERE" in s]
        assert len(looked) == 2
        for sql, column in zip(looked, ("phone", "email"), strict=True):
            assert scans(store.conn, sql) == [], sql
            plan = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert f"SEARCH c USING INDEX contacts_{column} ({column}=?)" in plan, plan
    finally:
        store.close()
