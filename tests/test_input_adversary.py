"""Hostile input the other bad-input tests do not reach: configs whose values load but
would quietly weaken a promise (an ignored column a vendor reads, a suppression channel
that matches nothing, a phone region that does not exist), values that crashed the loader
with a traceback, and exports whose bad rows made present contacts look gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.errors import GuardError
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, assert_fingerprint_cache_holds, esputnik_table

HEADER = b"Record ID,First Name,Last Name,Email,Phone,Segment\r\n"


def row(i: int, name: bytes = b"Ann") -> bytes:
    return b"%d,%s,Lee,p%d@example.com,+3247000%04d,Gold\r\n" % (i, name, i, i)


def rows(n: int, bad: set[int] = frozenset(), name: bytes = b"Ren\xe9") -> bytes:  # type: ignore[assignment]
    """`n` rows; those in `bad` with a First Name in Latin-1 (not UTF-8)."""
    return HEADER + b"".join(row(i, name if i in bad else b"Ann") for i in range(1, n + 1))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, ESputnikSim]]:
    sim = ESputnikSim()
    with Server(sim) as server:
        yield World(tmp_path, {"esputnik": esputnik_table(server.url)}), sim


def gone(w: World) -> list[str]:
    store = w.store()
    try:
        return [r["key"] for r in store.query("SELECT key FROM contacts WHERE gone_at IS NOT NULL")]
    finally:
        store.close()


# --- a quarantined row is not a contact gone ---------------------------------------------
def test_a_known_contact_whose_row_is_quarantined_is_not_marked_gone(
    world: tuple[World, ESputnikSim],
) -> None:
    w, sim = world
    w.export.write_bytes(rows(20))
    assert w.sync().exit_code == 0
    w.export.write_bytes(rows(20, bad={5}))
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert (report.plan.quarantined, report.plan.gone) == (1, 0)
    assert gone(w) == []
    assert len(sim.contacts()) == 20
    store = w.store()
    try:
        assert_fingerprint_cache_holds(store.conn)
    finally:
        store.close()
    # the next run reads the same rows the same way: still there, nothing sent
    report = w.sync()
    assert report.plan is not None and (report.plan.quarantined, report.plan.gone) == (1, 0)
    assert gone(w) == []
    # and a bad row of a key that a good row of later in the file has is a mere repeat
    w.export.write_bytes(rows(20, bad={5}) + row(5, b"Annie"))
    report = w.sync()
    assert report.plan is not None and report.plan.gone == 0
    assert {c["firstName"] for c in sim.contacts() if c["externalCustomerId"] == "5"} == {"Annie"}


def test_an_export_mostly_quarantined_is_not_refused_as_missing_contacts(
    world: tuple[World, ESputnikSim],
) -> None:
    """15 of 20 rows in Latin-1: the contacts are in the file. The guard said they were
    missing and that `--force` would do ("if the export really lost these contacts"),
    and `--force` marked the 15 gone."""
    w, _sim = world
    w.export.write_bytes(rows(20))
    assert w.sync().exit_code == 0
    w.export.write_bytes(rows(20, bad=set(range(6, 21))))
    report = w.sync()
    assert report.plan is not None and report.plan.gone == 0
    assert report.plan.quarantined == 15
    assert gone(w) == []
    # a real loss is still refused
    w.export.write_bytes(rows(2))
    with pytest.raises(GuardError, match="18 of 20 known contacts"):
        w.sync()
