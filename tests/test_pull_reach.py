"""What a pulled opt-out is matched by: the store keeps its email and phone as the diff
compares them (the contacts' reach: a trimmed, lower-cased email, an E.164 phone), so an
opt-out pulled before its contact was ever exported still holds that contact back.

`syncd.state.pulled.match_key` trimmed the email it matched with, but the row stored it
only lower-cased: a SignalVine profile email `" Ann@Example.com"` (SignalVine's connector
passes it as it came) was stored `" ann@example.com"`, which no contact's email is.
"""

from __future__ import annotations

from pathlib import Path

from syncd.config import SuppressionConfig
from syncd.state import Store
from syncd.state.diffed import DiffStore
from syncd.state.pulled import save_unsubscribe

NOW = "2026-12-01T02:00:00+00:00"


def test_an_opt_out_pulled_before_its_contact_holds_it_back_by_padded_email_or_spaced_phone(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "syncd.db")
    try:
        with store.write():  # no contact yet: the opt-out names no key
            for vendor_id, email, phone in (
                ("p1", " Ann@Example.COM\t", None),
                ("p2", None, "+32 470 12 34 56"),
                ("p3", None, "0032 470 99 88 77"),
            ):
                record = {"vendor_id": vendor_id, "email": email, "phone": phone, "at": None}
                save_unsubscribe(store.db, "signalvine", record, NOW)
        rows = store.conn.execute("SELECT vendor_id, key, email, phone FROM unsubscribes")
        assert sorted(tuple(r) for r in rows) == [
            ("p1", None, "ann@example.com", None),
            ("p2", None, None, "+32470123456"),
            ("p3", None, None, "+32470998877"),
        ]
        # the contacts as a later export's diff sees them (normalised by `project`)
        reach = {
            "CRM-1": ("ann@example.com", None),
            "CRM-2": (None, "+32470123456"),
            "CRM-3": (None, "+32470998877"),
            "CRM-4": ("bob@example.com", "+32470000000"),
        }
        held = DiffStore(store, 1, NOW, "export.csv").suppressions(
            SuppressionConfig().channels, reach
        )
        assert sorted(held) == ["CRM-1", "CRM-2", "CRM-3"]
    finally:
        store.close()


def test_a_phone_that_is_no_e164_number_is_kept_as_it_came(tmp_path: Path) -> None:
    # a national number: which country it is in only the CRM's phone_region says
    store = Store.open(tmp_path / "syncd.db")
    try:
        with store.write():
            record = {"vendor_id": "p1", "phone": "0470 12 34 56", "at": None}
            save_unsubscribe(store.db, "esputnik", record, NOW)
        assert store.scalar("SELECT phone FROM unsubscribes") == "0470 12 34 56"
    finally:
        store.close()
