"""A batch the vendor refuses whole, split by the values its words quote (`push._split`),
against a vendor whose words quote a contact it does not object to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from syncd.errors import FatalError
from syncd.push import Deliverer
from syncd.sandbox.base import Server
from syncd.state import Store
from syncd.vendors import Contact
from syncd.vendors.base import Job, OnJob, Result, Status
from tests.kits import hellocustomer
from tests.test_push import NOW, queue
from tests.vendors.test_contract import make_connector


def test_words_quoting_a_contact_the_vendor_accepts_fall_back_to_halving_not_one_by_one(
    tmp_path: Path,
) -> None:
    """Hello Customer's largest batch (1000, all or nothing) refused for its last contact
    with words naming the body's first row: the quoted contact goes alone and is taken, so
    the words were no guide, and the rest is halved (about two requests a halving), not
    peeled a first row at a time (a request per contact, and a RecursionError at ~1000)."""
    n = 1000
    with Server(hellocustomer.simulator()) as server:
        connector = make_connector(
            hellocustomer.KIT, server.url, tmp_path, extra=f"batch_size = {n}\n"
        )
        store = Store.open(tmp_path / "s.db")
        contacts = [hellocustomer.contact(i) for i in range(n)]
        queue(store, "hellocustomer", [(c, "pending", None) for c in contacts])
        bad = contacts[-1].key
        sizes: list[int] = []

        def start(batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
            sizes.append(len(batch))
            assert connector.http.on_write is not None
            connector.http.on_write()  # the request goes
            if any(c.key == bad for c in batch):
                first = batch[0].fields["email"]
                raise FatalError(f"HTTP 400: row 1 ({first}): a respondent is invalid")
            return [Result(c.key, Status.SENT) for c in batch]

        connector.start = start  # type: ignore[method-assign]
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        statuses = {
            r["key"]: r["status"] for r in store.query("SELECT key, status FROM deliveries")
        }
        store.close()
    assert out.stopped is None
    assert statuses[bad] == "failed"
    assert {k: s for k, s in statuses.items() if k != bad} == {c.key: "sent" for c in contacts[:-1]}
    assert len(sizes) < 30, f"{len(sizes)} requests for one refused contact"


def test_words_that_named_a_refused_contact_keep_guiding_the_split_of_the_rest(
    tmp_path: Path,
) -> None:
    """Two contacts Hello Customer refuses, each named in turn by its refusal: each goes
    alone and fails, the rest goes whole; five requests, not a halving."""
    sim = hellocustomer.simulator()
    contacts = [hellocustomer.contact(i) for i in range(8)]
    for c in (contacts[2], contacts[5]):
        hellocustomer.reject(sim, c, "unknown domain")
    with Server(sim) as server:
        connector = make_connector(
            hellocustomer.KIT, server.url, tmp_path, extra="batch_size = 8\n"
        )
        store = Store.open(tmp_path / "s.db")
        queue(store, "hellocustomer", [(c, "pending", None) for c in contacts])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        statuses = {
            r["key"]: r["status"] for r in store.query("SELECT key, status FROM deliveries")
        }
        store.close()
    assert out.counts == {"sent": 6, "failed": 2}
    assert [k for k, s in statuses.items() if s == "failed"] == [contacts[2].key, contacts[5].key]
    assert hellocustomer.triggers(sim) == {
        c.key: 1 for c in contacts if c not in (contacts[2], contacts[5])
    }
    assert (
        len(
            sim.requests(
                f"/V1.0/EN/campaign/{hellocustomer.CAMPAIGN}/respondent/addmultipletocache", "POST"
            )
        )
        == 5
    )
