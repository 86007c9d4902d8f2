"""Analyst views held to their documentation (`syncd/analyst.py`, the README's "For
analysts"): each disagreement found, as the smallest store that shows it."""

from __future__ import annotations

from pathlib import Path

from syncd.state import Store

# --- the disagreements found, each as the smallest store that shows it -------------------


def test_nps_over_time_keeps_an_nps_reported_without_shares(tmp_path: Path) -> None:
    """Only a period the vendor reports 0 (or nothing) for, NPS and shares alike, has no
    respondents: an NPS that came without its shares is the vendor's NPS (m010 made it
    NULL, as it looked at the shares alone)."""
    store = Store.open(tmp_path / "s.db")
    try:
        with store.write() as c:
            c.executemany(
                "INSERT INTO nps (vendor, filter, period_start, period_end, nps, promoters, "
                "passives, detractors, pulled_at) VALUES ('hellocustomer', '[]', ?, ?, ?, ?, ?, ?, "
                "'2026-03-01T00:00:00+00:00')",
                [
                    ("2026-01-01", "2026-01-31", -20.0, None, None, None),  # no shares said
                    ("2026-02-01", "2026-02-28", 0.0, 0.0, 0.0, 0.0),  # nobody answered
                    ("2026-03-01", "2026-03-31", 0.0, None, None, None),  # nothing but a 0
                ],
            )
        got = [tuple(r) for r in store.query("SELECT period_start, nps FROM nps_over_time")]
        assert got == [("2026-01-01", -20.0), ("2026-02-01", None), ("2026-03-01", None)]
    finally:
        store.close()


def test_response_rate_lists_no_month_for_a_survey_without_sent_at(tmp_path: Path) -> None:
    """A `sent` delivery without `sent_at` (the column allows it; syncd's own push always
    sets it) was acknowledged in no month: m010 listed it as a month of NULL at 0%."""
    store = Store.open(tmp_path / "s.db")
    try:
        with store.write() as c:
            c.execute(
                "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', "
                "'2026-01-01T00:00:00+00:00', 'ok')"
            )
            c.executemany(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at, sent_at) VALUES (1, 'hellocustomer', ?, 'new', 'sent', "
                "7, '{}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', ?)",
                [("a", None), ("b", "2026-01-02T00:00:00+00:00")],
            )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
                "VALUES ('hellocustomer', 'responses', 'x', '2026-01-03T00:00:00+00:00')"
            )
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-01", 1, 0, 0.0)]
    finally:
        store.close()
