"""eSputnik attacked as an adversary would: export values at the calendar's edges, answers
that name contacts by a value several contacts of the batch share, echoes of a refused
contact in another form than it was sent. Each test says what broke before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import HEADER, rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Contact, Status
from tests.helpers import World, esputnik_table
from tests.vendors.test_esputnik import Status200, connector_for, push

TYPED = """[fields]
email = "Email"
externalCustomerId = "Record ID"
[metadata]
"7" = "Closed Date"
[types]
"7" = "datetime"
"""


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim(polls_to_finish=1)
    with Server(app) as server:
        yield app, server


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+01:00"])
def test_a_date_the_calendar_cannot_hold_in_the_zone_quarantines_its_contact_only(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], edge: str
) -> None:
    """A typed datetime whose offset puts it past year 9999 (or before year 1) in
    date_timezone raised an OverflowError out of the diff: one export row stopped the
    whole run, every vendor's every change with it. It is quarantined, as an impossible
    date (Feb 30) is, and the others go."""
    app, server = sim
    app.define_field(7, "datetime")
    body, _ = esputnik_table(server.url)
    world = World(tmp_path, {"esputnik": (body, TYPED)})
    data = list(rows(3))
    closed = HEADER.index("Closed Date")
    data[0][closed] = edge
    data[1][closed] = "2026-03-04T14:05:30+01:00"
    data[2][closed] = ""
    world.write(data)
    assert world.sync().exit_code == 0
    status = {d["key"]: d["status"] for d in world.deliveries()}
    assert status == {data[1][0]: "sent", data[2][0]: "sent"}
    store = world.store()
    try:
        (why,) = [dict(r) for r in store.query("SELECT key, vendor, reason FROM quarantine")]
    finally:
        store.close()
    assert (why["key"], why["vendor"]) == (data[0][0], "esputnik")
    assert "outside the calendar" in why["reason"]
    held = {c["externalCustomerId"]: c["fields"] for c in app.contacts()}
    assert held[data[1][0]] == {"7": "2026-03-04T13:05"}  # converted to UTC


def household(i: int, first: str, ref: str | None = None) -> Contact:
    """Contacts of one household: one email, their own CRM key (as externalCustomerId)."""
    key = f"H{i}"
    fields = {"email": "home@example.com", "firstName": first, "externalCustomerId": key}
    return Contact(key, fields, ref=ref)


HOUSEHOLD = '[fields]\nemail = "Email"\nfirstName = "F"\nexternalCustomerId = "Record ID"\n'


def test_a_skipped_contact_is_never_acknowledged_by_a_value_its_household_shares(
    tmp_path: Path,
) -> None:
    """The spec's DedupeMapping names a contact by "a value of the field used to determine
    the contact uniqueness": under dedupeOn = email that may be the email, which a
    household shares. H0 was deleted in eSputnik, so its import skipped it (no
    failedContacts, the session FINISHED) and created H1 anew; the one entry naming
    home@example.com named both, and H0 was marked sent. A value shared by more contacts
    than it has entries now acknowledges none of them."""
    app = ESputnikSim(polls_to_finish=1, mapping_names="dedupe")
    with Server(app) as server:
        connector = connector_for(tmp_path, server.url, HOUSEHOLD)
        first = push(connector, [household(0, "Ann"), household(1, "Bob")])
        assert {r.status for r in first.values()} == {Status.SENT}  # two entries, two contacts
        (gone,) = [c["id"] for c in app.contacts() if c["externalCustomerId"] == "H0"]
        app.delete(gone)
        again = push(connector, [household(0, "Ann"), household(1, "Bobby")])
    assert again["H0"].status is Status.FAILED
    assert gone not in {c["id"] for c in app.contacts()}  # eSputnik never imported H0
    assert again["H1"].status is not Status.SENT  # the entry cannot say it is H1's
    assert "share it (with H1)" in (again["H0"].reason or "")


@pytest.mark.parametrize(
    ("contacts", "mapping", "expected"),
    [
        # each has an entry: both sent, neither given an id that may be the other's
        (
            [household(0, "Ann"), household(1, "Bob")],
            [("home@example.com", 1), ("home@example.com", 2)],
            {"H0": ("sent", None), "H1": ("sent", None)},
        ),
        # the entry carries the id H1 was given before: it is H1's, H0 was skipped
        (
            [household(0, "Ann", ref="1"), household(1, "Bob", ref="2")],
            [("home@example.com", 2)],
            {"H0": ("failed", None), "H1": ("sent", "2")},
        ),
        # no externalCustomerId: one eSputnik contact, found by the email, imported
        (
            [
                Contact("A", {"email": "home@example.com"}),
                Contact("B", {"email": "home@example.com"}),
            ],
            [("home@example.com", 7)],
            {"A": ("sent", "7"), "B": ("sent", "7")},
        ),
        # a value one contact alone has is that contact's, whatever the shared one says
        (
            [household(0, "Ann"), household(1, "Bob")],
            [("H0", 1), ("home@example.com", 2)],
            {"H0": ("sent", "1"), "H1": ("sent", "2")},
        ),
    ],
    ids=["entry-each", "by-ref", "one-contact", "own-key"],
)
def test_a_shared_value_acknowledges_only_as_many_contacts_as_it_has_entries(
    tmp_path: Path,
    contacts: list[Contact],
    mapping: list[tuple[str, int]],
    expected: dict[str, tuple[str, str | None]],
) -> None:
    app = Status200()
    app.mapping = [{"dedupeValue": v, "contactId": i} for v, i in mapping]
    fields = (
        HOUSEHOLD if contacts[0].fields.get("externalCustomerId") else '[fields]\nemail = "E"\n'
    )
    with Server(app) as server:
        results = push(connector_for(tmp_path, server.url, fields), contacts)
    assert {k: (r.status.value, r.ref) for k, r in results.items()} == expected
