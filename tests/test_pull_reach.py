"""What a pulled opt-out is matched by: the store keeps its email and phone as the diff
compares them (the contacts' reach: a trimmed, lower-cased email, an E.164 phone), so an
opt-out pulled before its contact was ever exported still holds that contact back.

`syncd.state.pulled.match_key` trimmed the email it matched with, but the row stored it
only lower-cased: a SignalVine profile email `" Ann@Example.com"` (SignalVine's connector
passes it as it came) was stored `" ann@example.com"`, which no contact's email is.
"""

from __future__ import annotations

import json
from pathlib import Path

from werkzeug.wrappers import Response

from syncd.config import SuppressionConfig
from syncd.pull import pull
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.state.diffed import DiffStore
from syncd.state.pulled import save_unsubscribe
from tests.helpers import World, esputnik_table

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


def test_es_an_sms_opt_out_without_its_plus_holds_back_its_contact(tmp_path: Path) -> None:
    """eSputnik may answer an sms sent as +380… without its + (its spec shows both forms;
    the push side compares them by their digits). Stored as it came, an sms-only opt-out
    matched no contact's E.164 phone: that contact was surveyed again."""
    sim = ESputnikSim()
    with Server(sim) as server:
        sim.unsubscribe("u0@example.com")
        sim.unsubscribe("u1@example.com")

        def by_sms(answer: Response) -> Response:
            items = json.loads(answer.get_data())
            for item, sms in zip(items, ("380501234567", "+380 50 765 43 21"), strict=True):
                item.pop("email")
                item.update(sms=sms, mediaType="sms")
            return json_response(items)

        real = sim.activity
        sim.activity = lambda request: by_sms(real(request))  # type: ignore[method-assign]
        world = World(tmp_path, {"esputnik": esputnik_table(server.url)})
        store = Store.open(world.cfg.store.path)
        try:
            report = pull(world.cfg, store, world.clock)
            assert report.exit_code == 0, report.summary()
            phones = [p for (p,) in store.conn.execute("SELECT phone FROM unsubscribes")]
            assert sorted(phones) == ["+380501234567", "+380507654321"]
            reach = {"CRM-1": (None, "+380501234567"), "CRM-2": (None, "+380507654321")}
            held = DiffStore(store, 1, NOW, "export.csv").suppressions(
                SuppressionConfig().channels, reach
            )
            assert sorted(held) == ["CRM-1", "CRM-2"]
        finally:
            store.close()


def test_es_an_sms_is_given_its_plus_only_when_it_is_bare_international_digits() -> None:
    from syncd.vendors.esputnik import _sms

    assert _sms("380501234567") == "+380501234567"
    assert _sms(" +380 50 123 45 67 ") == "+380 50 123 45 67"  # the store folds it
    assert _sms("0032470123456") == "0032470123456"  # likewise
    assert _sms("0470 12 34 56") == "0470 12 34 56"  # national: no + to guess
    assert _sms("1234") == "1234"  # no phone number: as it came
    assert _sms("") is None
    assert _sms(None) is None
    assert _sms(380501234567) == "+380501234567"  # digits sent as a number
    assert _sms({"value": "380501234567"}) == {"value": "380501234567"}  # `clean` refuses it


def test_m024_converts_the_opt_outs_an_older_pull_stored_padded(tmp_path: Path) -> None:
    """A store from before m024 holds opt-outs as the pull stored them then (the email
    only lower-cased, the phone as it came): the migration stores them as the suppression
    compares them, and keeps what it cannot read as a phone."""
    from sqlite_utils import Database

    from syncd.state.schema import migrations

    old = Database(tmp_path / "old.db")
    migrations.apply(old, stop_before="m024_unsubscribes_reach_as_compared")
    for vid, email, phone in (
        ("u1", " ann@example.com\t", None),
        ("u2", None, "+32 470 12 34 56"),
        ("u3", "bob@example.com", "0470 12 34 56"),
    ):
        old.execute(
            "INSERT INTO unsubscribes (vendor, vendor_id, email, phone, at, pulled_at) "
            "VALUES ('x', ?, ?, ?, NULL, 'now')",
            (vid, email, phone),
        )
    old.conn.commit()
    old.close()
    store = Store.open(tmp_path / "old.db")
    try:
        got = store.conn.execute(
            "SELECT vendor_id, email, phone FROM unsubscribes ORDER BY vendor_id"
        ).fetchall()
        assert [tuple(r) for r in got] == [
            ("u1", "ann@example.com", None),
            ("u2", None, "+32470123456"),
            ("u3", "bob@example.com", "0470 12 34 56"),  # national: its country unknown
        ]
    finally:
        store.close()
