"""A store whose digests syncd made with version 1 (`hash_record`, 40 hex digits) is
converted as the diff meets its contacts: nobody is sent or surveyed for it, while a
real change made in the same run is sent as ever, and a contact absent from the
upgrade's export comes back later unchanged without a send."""

from __future__ import annotations

from pathlib import Path

import pytest

import syncd.project
from syncd.project import Projector
from syncd.sample import rows
from syncd.state import OPEN_STATUSES
from syncd.vendors.base import Contact
from tests.helpers import World
from tests.test_rebaseline import CLOSED, FIRST_NAME, LAUNCH, N, Sims, make_world, sims

__all__ = ["sims"]  # the fixture


def version_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """syncd as it was: digests by `hash_record`, definitions of version 1."""
    view = Projector.view

    def old_view(self: Projector, contact: Contact, row: list[str]) -> tuple[str, str]:
        data = view(self, contact, row)[1]
        return self.legacy(data, row), data

    monkeypatch.setattr(Projector, "view", old_view)
    monkeypatch.setattr(Projector, "watched", lambda self, row: self.legacy("", row))
    monkeypatch.setattr(syncd.project, "DIGEST_VERSION", 1)


def digest_types(world: World) -> set[str]:
    """The types of the digests acknowledged or in an open delivery (a closed delivery
    keeps the digest it was made with: history, never compared)."""
    store = world.store()
    try:
        sql = (
            "SELECT typeof(hash) FROM vendor_state UNION SELECT typeof(hash) FROM deliveries "
            f"WHERE status IN {OPEN_STATUSES!r}"
        )
        return {r[0] for r in store.query(sql)}
    finally:
        store.close()


def test_version_one_digests_are_converted_without_a_send(
    tmp_path: Path, sims: Sims, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(tmp_path, sims)
    export = [list(r) for r in rows(N)]
    with monkeypatch.context() as old:
        version_one(old)
        world.write(export)
        assert world.sync().exit_code == 0
        world.write(export[3:])  # three contacts leave before the upgrade...
        assert world.sync().exit_code == 0
    assert digest_types(world) == {"text"}

    upgrade = [list(r) for r in export[3:]]
    upgrade[0][FIRST_NAME] += "x"  # a change eSputnik sees, not Altcraft
    upgrade[1][CLOSED] = "2026-11-30"  # a change Altcraft watches
    launches, posts = sims.altcraft.count(LAUNCH), sims.esputnik.count(method="POST")
    world.write(upgrade)
    report = world.sync()
    assert report.exit_code == 0, report.summary()
    assert sims.altcraft.count(LAUNCH) == launches + 1
    plan = report.plan
    assert plan is not None
    assert plan.vendors["altcraft"].counts["changed"] == 1
    assert plan.vendors["esputnik"].counts["changed"] == 1
    assert plan.vendors["esputnik"].counts["new"] == 0
    assert sorted(plan.notices()) == [
        f"altcraft: converted {N - 1} stored digests to version 2; none re-sent",
        f"esputnik: converted {N - 1} stored digests to version 2; none re-sent",
    ]  # the 27 in the export but the changed one, and the 3 absent ones
    assert sims.esputnik.count(method="POST") == posts + 1  # the changed contact's upsert
    assert digest_types(world) == {"integer"}

    world.write([*export[:3], *upgrade])  # ...and come back unchanged
    launches = sims.altcraft.count(LAUNCH)
    again = world.sync()
    assert again.exit_code == 0, again.summary()
    assert again.plan is not None
    assert sims.altcraft.count(LAUNCH) == launches
    assert sims.esputnik.count(method="POST") == posts + 1
    for vendor in ("altcraft", "esputnik"):
        counts = again.plan.vendors[vendor].counts
        assert counts["new"] == counts["changed"] == 0, counts
    assert again.plan.notices() == []
