"""The analysts' contract: every table and view documented, the docs true to the schema,
the README's schema section generated from the same source, the Datasette metadata served."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import pytest
from datasette.app import Datasette

from syncd.analyst import EXAMPLES, RELATIONS, datasette_metadata, markdown
from syncd.state import Store
from syncd.vendors import REGISTRY
from tests.test_readme import block


def test_every_table_and_view_is_described_with_exactly_its_columns(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    try:
        actual = {
            r["name"]: r["type"]
            for r in store.query(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }
        described = {r.name: ("view" if r.view else "table") for r in RELATIONS}
        assert described == actual
        for r in RELATIONS:
            columns = [row["name"] for row in store.query(f"PRAGMA table_info({r.name})")]
            assert list(r.columns) == columns, f"{r.name}: documented {list(r.columns)}"
        for e in EXAMPLES:
            store.query(e.sql)  # runs (the demo test shows they return rows)
    finally:
        store.close()


def test_the_readme_schema_section_is_generated_from_the_same_source() -> None:
    assert block("SCHEMA") == markdown().strip(), (
        "README schema section is stale: run python -m tests.test_readme"
    )


def test_datasette_serves_the_descriptions_and_canned_queries_and_hides_bookkeeping(
    tmp_path: Path,
) -> None:
    db = tmp_path / "syncd.db"
    Store.open(db).close()
    ds = Datasette([str(db)], metadata=datasette_metadata("syncd"))

    async def fetch() -> tuple[str, str, str, dict[str, object], int]:
        index = await ds.client.get("/")
        database = await ds.client.get("/syncd")
        page = await ds.client.get("/syncd/deliveries")
        query = await ds.client.get("/syncd/nps_by_city.json?_shape=objects")
        view = await ds.client.get("/syncd/view_response_rate.json")
        return index.text, database.text, page.text, query.json(), view.status_code

    index, database, html, result, view_status = asyncio.run(fetch())
    assert "The delivery ledger" in html
    assert "never re-sent without" in html  # a column description
    assert result["ok"] is True and result["rows"] == []
    assert view_status == 200
    for text in (index, database):  # both open on links to the useful queries
        assert 'Start with: <a href="/syncd/view_response_rate">response_rate</a>' in text
    internal = {r.name for r in RELATIONS if r.internal}
    assert {"_sqlite_migrations", "fingerprint_cache", "contacts_generation"} <= internal
    for name in internal:
        assert f'href="/syncd/{name}"' not in database, name
    assert 'href="/syncd/contacts"' in database


@pytest.mark.parametrize("name", ["syncd.db", "syncd copy", "syncd-2026-12-03"])
def test_the_start_links_open_their_queries_whatever_the_database_is_named(
    tmp_path: Path, name: str
) -> None:
    """Datasette serves a file under its name without `.db`, which may hold a dot (the
    README's salvage makes `syncd.db.recovered`) or a space; in a URL it tilde-encodes
    every byte but letters, digits, `_` and `-` (a space as `+`). The links were the raw
    name, so each of them was Datasette's 404 for such a name."""
    db = tmp_path / f"{name}.db"
    Store.open(db).close()
    ds = Datasette([str(db)], metadata=datasette_metadata(name))

    async def fetch() -> tuple[list[str], list[int]]:
        index = await ds.client.get("/")
        start = re.search(r"Start with: (.*?)\.</p>", index.text)
        links = re.findall(r'<a href="([^"]+)">', start[1] if start else "")
        return links, [(await ds.client.get(link)).status_code for link in links]

    links, statuses = asyncio.run(fetch())
    assert len(links) == 4 and statuses == [200] * 4, (links, statuses)


T0 = "2026-01-01T00:00:00"


def _store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "s.db")
    with store.write() as c:
        c.execute(
            "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', ?, 'ok')",
            (T0,),
        )
        c.executemany(
            "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at) "
            "VALUES (?, '{}', 0, ?, ?)",
            [(k, T0, T0) for k in ("a", "b", "c")],
        )
    return store


def _sent(store: Store, rows: list[tuple[str, str, str]]) -> None:
    """Acknowledged deliveries: (vendor, key, sent_at)."""
    with store.write() as c:
        c.executemany(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "created_at, updated_at, sent_at) VALUES (1, ?, ?, 'new', 'sent', 'h', '{}', ?, ?, ?)",
            [(v, k, at, at, at) for v, k, at in rows],
        )


def _responses(store: Store, rows: list[tuple[str, str, str]]) -> None:
    """Responses: (vendor, key, answered_at)."""
    with store.write() as c:
        c.executemany(
            "INSERT INTO responses (vendor, response_id, key, answered_at, pulled_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(v, f"r{i}", k, at, at) for i, (v, k, at) in enumerate(rows)],
        )
        c.execute(
            "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
            "VALUES ('hellocustomer', 'responses', 'x', ?)",
            (T0,),
        )


def test_response_rate_counts_contacts_at_the_vendors_whose_responses_are_pulled(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    try:
        _sent(
            store,
            [
                ("esputnik", "a", "2026-01-02T00:00:00"),  # an upsert: no survey, not listed
                ("hellocustomer", "a", "2026-01-02T00:00:00"),  # surveyed twice in January,
                ("hellocustomer", "a", "2026-01-20T00:00:00"),  # answered once: one contact
                ("hellocustomer", "b", "2026-01-05T00:00:00"),  # January's survey unanswered,
                ("hellocustomer", "b", "2026-02-03T00:00:00"),  # February's answered
                ("hellocustomer", "c", "2026-02-04T00:00:00"),
            ],
        )
        _responses(
            store,
            [
                ("hellocustomer", "a", "2026-01-21T00:00:00"),
                ("hellocustomer", "b", "2026-02-10T00:00:00"),
                ("hellocustomer", None, "2026-02-10T00:00:00"),  # unmatched: counts nowhere
            ],
        )
        rows = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert rows == [
            ("hellocustomer", "2026-01", 2, 1, 50.0),
            ("hellocustomer", "2026-02", 2, 1, 50.0),
        ]
    finally:
        store.close()


def test_nps_over_time_is_null_for_a_period_without_respondents(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        with store.write() as c:
            c.executemany(
                "INSERT INTO nps (vendor, filter, period_start, period_end, nps, detractors, "
                "passives, promoters, pulled_at) VALUES ('hellocustomer', '[]', ?, ?, ?, ?, ?, ?, ?)",
                [
                    ("2026-01-01", "2026-01-31", 0, 0, 0, 0, T0),  # nobody answered
                    ("2026-02-01", "2026-02-28", 0, 25.0, 50.0, 25.0, T0),  # a real 0
                ],
            )
        rows = [
            tuple(r)
            for r in store.query(
                "SELECT period_start, nps, promoters, passives, detractors FROM nps_over_time"
            )
        ]
        assert rows == [
            ("2026-01-01", None, None, None, None),
            ("2026-02-01", 0, 25.0, 50.0, 25.0),
        ]
    finally:
        store.close()


def test_the_views_read_deliveries_and_responses_through_their_indexes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        indexes = {
            r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {
            "responses_key",
            "deliveries_sent_month",
            "deliveries_sent_key",
            "deliveries_held",
            "answers_nps",
        } <= indexes
        tables = {"deliveries", "d", "d2", "responses", "r"}  # the names and aliases used
        for r in RELATIONS:
            if not r.view:
                continue
            plan = [
                row["detail"] for row in store.query(f"EXPLAIN QUERY PLAN SELECT * FROM {r.name}")
            ]
            scans = [
                line
                for line in plan
                if line.startswith("SCAN ") and line.split()[1] in tables and "INDEX" not in line
            ]
            assert not scans, f"{r.name} scans a whole table: {plan}"
        plan = " ".join(
            row["detail"] for row in store.query("EXPLAIN QUERY PLAN SELECT * FROM response_rate")
        )
        assert "responses_key" in plan and "deliveries_sent_month" in plan
        assert "deliveries_sent_key" in plan
    finally:
        store.close()


# what m010 made contact_status, and the example that aggregated it: the meanings that
# m011's view and the rewritten example keep
M010_CONTACT_STATUS = """
SELECT c.key, d.vendor, d.status, d.reason, d.attempts, d.updated_at,
       vs.acked_at, vs.ref AS vendor_ref, c.gone_at
FROM contacts c
JOIN deliveries d ON d.id IN (SELECT max(id) FROM deliveries
                              WHERE key = c.key GROUP BY vendor)
LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = c.key"""
OLD_NOT_YET_AT_VENDOR = """
SELECT vendor, status, reason, count(*) AS contacts
FROM old_contact_status
WHERE status NOT IN ('sent', 'superseded')
GROUP BY vendor, status, reason ORDER BY contacts DESC"""
STATUSES = ("pending", "in_flight", "sent", "failed", "unknown", "dead", "skipped", "superseded")


def _ledger(tmp_path: Path, seed: int) -> Store:
    """A store with a random ledger: 40 contacts (some gone), up to four deliveries per
    contact and vendor with any status and a few reasons, some acknowledged."""
    rng = random.Random(seed)
    store = _store(tmp_path)
    vendors = list(REGISTRY)
    with store.write() as c:
        c.executemany(
            "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at, gone_at) "
            "VALUES (?, '{}', 0, ?, ?, ?)",
            [(f"k{i:02d}", T0, T0, T0 if rng.random() < 0.2 else None) for i in range(40)],
        )
        keys = [r[0] for r in c.execute("SELECT key FROM contacts")]
        rows = [
            (v, k, rng.choice(STATUSES), rng.choice((None, "invalid email", "unsubscribed")))
            for k in keys
            for v in vendors
            for _ in range(rng.choice((0, 1, 1, 2, 4)))
        ]
        rng.shuffle(rows)  # ids in no order of key or vendor
        c.executemany(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "attempts, reason, created_at, updated_at) "
            "VALUES (1, ?, ?, 'new', ?, 'h', '{}', 1, ?, ?, ?)",
            [
                (v, k, s, r, T0, f"2026-01-01T00:00:{i % 60:02d}")
                for i, (v, k, s, r) in enumerate(rows)
            ],
        )
        c.executemany(
            "INSERT OR IGNORE INTO vendor_state (vendor, key, hash, ref, acked_at) "
            "VALUES (?, ?, 'h', ?, ?)",
            [(v, k, f"ref-{k}", T0) for v, k, _, _ in rows if rng.random() < 0.5],
        )
        c.execute(f"CREATE TEMP VIEW old_contact_status AS {M010_CONTACT_STATUS}")
    return store


@pytest.mark.parametrize("seed", range(5))
def test_contact_status_and_not_yet_at_vendor_mean_what_they_meant(
    tmp_path: Path, seed: int
) -> None:
    """m011's contact_status is m010's row for row, whole and under the filters analysts
    use; the rewritten `not_yet_at_vendor` example counts what aggregating it did."""
    store = _ledger(tmp_path, seed)
    try:

        def rows(sql: str, *params: object) -> list[tuple[object, ...]]:
            return sorted((tuple(r) for r in store.query(sql, params)), key=repr)

        assert store.scalar("SELECT count(*) FROM old_contact_status") > 50
        assert rows("SELECT * FROM contact_status") == rows("SELECT * FROM old_contact_status")
        for key in ("k00", "k07", "k39", "nobody"):
            where = "WHERE key = ?"
            assert rows(f"SELECT * FROM contact_status {where}", key) == rows(
                f"SELECT * FROM old_contact_status {where}", key
            )
        for vendor in REGISTRY:
            for status in STATUSES:
                where = "WHERE vendor = ? AND status = ?"
                assert rows(f"SELECT * FROM contact_status {where}", vendor, status) == rows(
                    f"SELECT * FROM old_contact_status {where}", vendor, status
                )
        example = next(e for e in EXAMPLES if e.name == "not_yet_at_vendor")
        new = [tuple(r) for r in store.query(example.sql)]
        assert new and sorted(new, key=repr) == rows(OLD_NOT_YET_AT_VENDOR)
        assert [r[3] for r in new] == sorted((r[3] for r in new), reverse=True)
    finally:
        store.close()


def test_contact_status_filters_read_indexes_and_skip_the_sent_arm(tmp_path: Path) -> None:
    """A vendor and status filter reaches deliveries through the partial indexes, never by
    an automatic index (m010's view built one over every delivery, once per query)."""
    store = _store(tmp_path)
    try:
        for status in ("failed", "skipped", "sent"):
            plan = " ".join(
                row["detail"]
                for row in store.query(
                    "EXPLAIN QUERY PLAN SELECT * FROM contact_status "
                    "WHERE vendor = 'hellocustomer' AND status = ?",
                    (status,),
                )
            )
            assert "AUTOMATIC" not in plan, plan
            assert "deliveries_open (vendor=? AND status=?)" in plan
            assert "deliveries_held (vendor=? AND status=?)" in plan
    finally:
        store.close()


def test_the_examples_read_the_big_tables_through_indexes(tmp_path: Path) -> None:
    """No example query scans deliveries, contacts, vendor_state, responses or answers
    whole (a whole partial index, `answers_nps` or `deliveries_open`, is what it reads)."""
    store = _store(tmp_path)
    try:
        big = {"deliveries", "contacts", "vendor_state", "responses", "answers"}
        for e in EXAMPLES:
            plan = [row["detail"] for row in store.query(f"EXPLAIN QUERY PLAN {e.sql}")]
            names = big | {
                alias
                for table in big
                for alias in re.findall(rf"\b{table}\s+(?:AS\s+)?(\w+)", e.sql)
            }
            names -= {"WHERE", "JOIN", "ON", "LEFT", "GROUP", "ORDER", "UNION"}
            scans = [
                line
                for line in plan
                if line.startswith("SCAN ") and line.split()[1] in names and "INDEX" not in line
            ]
            assert not scans, f"{e.name} scans a whole table: {plan}"
    finally:
        store.close()
