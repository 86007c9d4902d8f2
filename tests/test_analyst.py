"""The analysts' contract: every table and view documented, the docs true to the schema,
the README's schema section generated from the same source, the Datasette metadata served."""

from __future__ import annotations

import asyncio
from pathlib import Path

from datasette.app import Datasette

from syncd.analyst import EXAMPLES, RELATIONS, datasette_metadata, markdown
from syncd.state import Store
from tests.test_readme import block


def test_every_table_and_view_is_described_and_every_described_column_exists(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "s.db")
    try:
        actual = {
            r["name"]: r["type"]
            for r in store.query(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' AND name != '_syncd_migrations'"
            )
        }
        actual.pop("_sqlite_migrations", None)
        described = {r.name: ("view" if r.view else "table") for r in RELATIONS}
        assert described == actual
        for r in RELATIONS:
            columns = {row["name"] for row in store.query(f"PRAGMA table_info({r.name})")}
            assert set(r.columns) <= columns, f"{r.name}: {set(r.columns) - columns}"
        for e in EXAMPLES:
            store.query(e.sql)  # runs (the demo test shows they return rows)
    finally:
        store.close()


def test_the_readme_schema_section_is_generated_from_the_same_source() -> None:
    assert block("SCHEMA") == markdown().strip(), (
        "README schema section is stale: run python -m tests.test_readme"
    )


def test_datasette_serves_the_descriptions_and_canned_queries(tmp_path: Path) -> None:
    db = tmp_path / "syncd.db"
    Store.open(db).close()
    ds = Datasette([str(db)], metadata=datasette_metadata("syncd"))

    async def fetch() -> tuple[str, dict[str, object], int]:
        page = await ds.client.get("/syncd/deliveries")
        query = await ds.client.get("/syncd/nps_by_city.json?_shape=objects")
        view = await ds.client.get("/syncd/view_response_rate.json")
        return page.text, query.json(), view.status_code

    html, result, view_status = asyncio.run(fetch())
    assert "The delivery ledger" in html
    assert "never re-sent without" in html  # a column description
    assert result["ok"] is True and result["rows"] == []
    assert view_status == 200
