"""`syncd demo` end to end, and the analysts' promise: every documented view and example
query returns rows on the demo database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncd.analyst import EXAMPLES, RELATIONS
from syncd.demo import run_demo
from syncd.errors import SyncdError
from tests.helpers import run_syncd


def test_the_demo_runs_and_every_view_and_example_returns_rows(tmp_path: Path) -> None:
    said: list[str] = []
    code = run_demo(tmp_path, 60, echo=said.append)
    text = "\n".join(said)
    assert code == 0, text  # the refusal staged at eSputnik is the only failed delivery
    assert "esputnik: " in text and "1 failed" in text
    for vendor in ("esputnik", "dropthought", "altcraft", "hellocustomer", "signalvine"):
        assert f"{vendor} simulator at http://127.0.0.1:" in text
    assert "esputnik: 3 request(s) for the delta" in text  # one upload and its polls
    assert "NPS at hellocustomer" in text and "skipped:" in text
    conn = sqlite3.connect(tmp_path / "syncd.db")
    try:
        for relation in RELATIONS:
            if relation.name == "unfinished_diff":  # holds a row only while a first sync runs
                continue
            n = conn.execute(f"SELECT count(*) FROM {relation.name}").fetchone()[0]
            assert n > 0, f"{relation.name} is empty on the demo database"
        for example in EXAMPLES:
            assert conn.execute(example.sql).fetchall(), example.name
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_demo_refuses_a_folder_that_holds_anything_and_leaves_it_as_it_is(
    tmp_path: Path,
) -> None:
    """`syncd demo --dir /etc/syncd` overwrote the installation's syncd.toml and mappings and
    reconciled its store against the simulators, recording as acknowledged what no real
    vendor had; a demo run twice in one folder said `first sync` of a delta, "as staged"."""
    config = tmp_path / "syncd.toml"
    config.write_text('[store]\npath = "syncd.db"\n', encoding="utf-8")
    (tmp_path / "syncd.db").write_bytes(b"the operator's store")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = run_syncd(tmp_path, "demo", "--dir", str(tmp_path), "--contacts", "10")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"syncd: demo --dir {tmp_path}: not an empty folder"), proc.stderr
    assert proc.stdout == ""
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(SyncdError, match="not an empty folder"):
        run_demo(config, 10, echo=print)  # a file is no folder either
    assert config.read_bytes() == before["syncd.toml"]
