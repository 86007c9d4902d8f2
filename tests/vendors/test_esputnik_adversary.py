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
from tests.helpers import World, esputnik_table

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
