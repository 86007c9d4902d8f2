"""The delivery loop's ledger under kills: `in_flight` only while a request may be out, and
only the newest delivery of a contact is ever sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.clock import FakeClock
from syncd.push import Deliverer
from syncd.sandbox.base import Server
from syncd.state import Store
from syncd.vendors import Contact
from tests.kits import esputnik, hellocustomer
from tests.vendors.test_contract import make_connector

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def queue(store: Store, vendor: str, rows: list[tuple[Contact, str, str | None]]) -> None:
    """Deliveries as a crashed run leaves them: (contact, status, job)."""
    run = store.start_run("test", NOW)
    with store.write() as c:
        for contact, status, job in rows:
            payload = json.dumps(
                {"fields": dict(contact.fields), "metadata": dict(contact.metadata)}
            )
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, job, "
                "attempts, created_at, updated_at) VALUES (?, ?, ?, 'changed', ?, ?, ?, ?, "
                "?, ?, ?)",
                (
                    run,
                    vendor,
                    contact.key,
                    status,
                    contact.fields["firstName"],  # the hash: which version this is
                    payload,
                    job,
                    1 if status == "in_flight" else 0,
                    NOW.isoformat(),
                    NOW.isoformat(),
                ),
            )


def renamed(i: int, first: str) -> Contact:
    c = esputnik.contact(i)
    return Contact(c.key, {**c.fields, "firstName": first}, c.metadata)


def test_a_stale_in_flight_upsert_is_superseded_on_resume_never_sent(tmp_path: Path) -> None:
    """Killed while an upsert was in flight, then the contact was edited: resume must not
    send the old payload beside (or after) the new one."""
    sim = esputnik.KIT.simulator()
    with Server(sim) as server:
        connector = make_connector(esputnik.KIT, server.url, tmp_path, extra="batch_size = 1\n")
        store = Store.open(tmp_path / "s.db")
        queue(
            store,
            "esputnik",
            [
                (renamed(1, "Old"), "in_flight", None),  # the kill left it in flight
                (renamed(1, "New"), "pending", None),  # the next export's change
                (renamed(2, "Stale"), "pending", None),  # two pending versions of one contact
                (renamed(2, "Fresh"), "pending", None),
            ],
        )
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = store.query("SELECT key, hash, status FROM deliveries ORDER BY id")
        state = {r["key"]: r["hash"] for r in store.query("SELECT key, hash FROM vendor_state")}
        store.close()
        bodies = [r.json() for r in sim.requests("/api/v1/contacts", "POST")]
        sent = [c["firstName"] for body in bodies for c in body["contacts"]]
    assert [(r["hash"], r["status"]) for r in rows] == [
        ("Old", "superseded"),
        ("New", "sent"),
        ("Stale", "superseded"),
        ("Fresh", "sent"),
    ]
    assert sorted(sent) == ["Fresh", "New"]  # the old payloads never left
    assert esputnik.KIT.held(sim)["K00001"]["firstName"] == "New"
    assert state == {"K00001": "New", "K00002": "Fresh"}  # what the vendor holds


class Killed(BaseException):
    """SIGKILL, as far as the store can tell: nothing after it runs."""


class KilledWhileSleeping(FakeClock):
    def sleep(self, seconds: float) -> None:
        raise Killed


def test_a_kill_during_pacing_leaves_the_batch_pending_not_unknown(tmp_path: Path) -> None:
    sim = hellocustomer.KIT.simulator()
    with Server(sim) as server:
        connector = make_connector(hellocustomer.KIT, server.url, tmp_path)
        connector.clock = connector.http.clock = KilledWhileSleeping()
        assert connector.http.pacer is not None
        connector.http.pacer.clock = connector.http.clock
        connector.http.pacer._next = float("inf")  # the next call must wait
        store = Store.open(tmp_path / "s.db")
        queue(store, "hellocustomer", [(hellocustomer.KIT.contact(1), "pending", None)])
        with pytest.raises(Killed):
            Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert tuple(store.query("SELECT status, attempts FROM deliveries")[0]) == ("pending", 0)
        store.close()
    assert sim.count(hellocustomer.KIT.push_path) == 0  # no byte left
