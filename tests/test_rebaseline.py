"""A change to what decides a vendor's hashes (a trigger vendor's `on_change`, an upsert
vendor's mapping, a store from before definitions were recorded): trigger vendors are
re-baselined and survey nobody, upsert vendors are sent again, and both say so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import cli
from syncd.pipeline import RunReport
from syncd.sample import rows
from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import ESPUTNIK_MAPPING, World, esputnik_table

N = 30
LAUNCH = "/api/v1.1/campaigns/triggers/start"  # and start_batch
WATCHED = '["Closed Date"]'
CITY, CLOSED, FIRST_NAME = 5, 10, 1  # columns of syncd.sample.HEADER


def altcraft_mapping(on_change: str = WATCHED) -> str:
    return f'[fields]\nemail = "Email"\n[trigger]\non_new = true\non_change = {on_change}\n'


class Sims:
    def __init__(self, altcraft: AltcraftSim, esputnik: ESputnikSim, urls: dict[str, str]):
        self.altcraft, self.esputnik, self.urls = altcraft, esputnik, urls


@pytest.fixture
def sims() -> Iterator[Sims]:
    altcraft, esputnik = AltcraftSim(), ESputnikSim()
    with Server(altcraft) as a, Server(esputnik) as e:
        yield Sims(altcraft, esputnik, {"altcraft": a.url, "esputnik": e.url})


def make_world(folder: Path, sims: Sims) -> World:
    table = f'base_url = "{sims.urls["altcraft"]}"\ntoken = "sandbox-token"\ntrigger_id = 7\n'
    return World(
        folder,
        {
            "altcraft": (table, altcraft_mapping()),
            "esputnik": esputnik_table(sims.urls["esputnik"]),
        },
    )


def surveyed(world: World, report: RunReport) -> list[str]:
    """The contacts the run launched the Altcraft campaign for."""
    return sorted(
        d["key"]
        for d in world.deliveries()
        if d["vendor"] == "altcraft" and d["run_id"] == report.run_id and d["status"] == "sent"
    )


def test_watching_one_more_column_surveys_nobody_then_a_change_to_it_surveys_that_contact(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    export = list(rows(N))
    world.write(export)
    first = world.sync()
    assert len(surveyed(world, first)) == N

    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    launches = sims.altcraft.count(LAUNCH)
    assert launches > 0  # the first sync's launches are counted
    again = world.sync()
    assert again.exit_code == 0, again.summary()
    assert sims.altcraft.count(LAUNCH) == launches, "an unchanged export surveyed people"
    assert again.plan is not None
    assert again.plan.vendors["altcraft"].counts["rebaselined"] == N
    assert again.plan.notices() == [
        f"altcraft: re-baselined {N} contacts, surveying none: [trigger] on_change changed: "
        "+ 'City' (to survey them instead, apply the change with `syncd sync --no-rebaseline`)"
    ]
    assert world.sync().plan.notices() == []  # type: ignore[union-attr]  # said once
    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "Country"]'))
    baseline = world.sync(baseline=True)  # acknowledges everything: nothing more to say
    assert baseline.plan is not None and baseline.plan.notices() == []
    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    assert world.sync().plan.vendors["altcraft"].counts["rebaselined"] == N  # type: ignore[union-attr]

    export[4][CITY] = "Somewhere else"
    export[7][FIRST_NAME] = "Renamed"  # a column altcraft does not watch
    world.write(export)
    assert surveyed(world, world.sync()) == ["CRM-0000004"]


def test_a_watched_change_or_a_departed_contact_in_the_rebaseline_run_is_treated_as_ever(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    export = list(rows(N))
    world.write(export)
    world.sync()

    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    export[3][CLOSED] = "2026-12-01"  # a ticket closes in the same export: a real change
    away = export.pop(9)  # and a contact leaves the export for a while
    world.write(export)
    report = world.sync()
    assert surveyed(world, report) == ["CRM-0000003"]
    assert report.plan is not None
    assert report.plan.vendors["altcraft"].counts["rebaselined"] == N - 1

    export.insert(9, away)  # it comes back as it left: nothing to survey
    world.write(export)
    assert surveyed(world, world.sync()) == []


def test_a_delivery_still_open_at_the_rebaseline_is_acknowledged_under_the_new_digest(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    export = list(rows(N))
    world.write(export)
    world.sync()
    export[2][CLOSED] = "2026-12-02"
    world.write(export)
    sims.altcraft.faults.add("status", status=429, count=100)
    assert world.sync().exit_code == 1  # CRM-0000002's launch waits, pending
    sims.altcraft.faults.clear()

    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    world.sync()
    launched = [d["key"] for d in world.deliveries() if d["run_id"] == 2 and d["status"] == "sent"]
    assert launched == ["CRM-0000002"]  # the pending launch went, in the re-baselining run
    export[2][FIRST_NAME] = "Renamed"  # not watched: brings the row back to the diff
    world.write(export)
    assert surveyed(world, world.sync()) == []


def test_no_rebaseline_surveys_everyone_the_new_column_makes_differ(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    world.write(list(rows(N)))
    world.sync()
    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    report = world.sync(rebaseline=False)
    assert len(surveyed(world, report)) == N
    assert report.plan is not None
    assert report.plan.notices() == [
        f"altcraft: [trigger] on_change changed: + 'City': {N} contacts are surveyed"
    ]


def test_a_dry_run_says_what_a_mapping_change_would_do_and_records_nothing(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    world.write(list(rows(N)))
    world.sync()
    posts = sims.esputnik.count("/api/v1/contacts", "POST")
    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    (tmp_path / "esputnik.toml").write_text(ESPUTNIK_MAPPING + '"102" = "City"\n')

    for _ in range(2):  # the dry run recorded nothing: the second one says the same
        result = CliRunner().invoke(
            cli, ["--config", str(tmp_path / "syncd.toml"), "sync", "--dry-run"]
        )
        assert result.exit_code == 0, result.output
        assert (
            f"altcraft: would re-baseline {N} contacts, surveying none: [trigger] on_change "
            "changed: + 'City' (to survey them instead, apply the change with `syncd sync "
            "--no-rebaseline`)" in result.output.splitlines()
        )
        assert (
            f"esputnik: [metadata] changed: + 102 = 'City': {N} contacts will be re-sent"
            in result.output.splitlines()
        )
    assert sims.esputnik.count("/api/v1/contacts", "POST") == posts

    report = world.sync()
    sent = sims.esputnik.requests("/api/v1/contacts", "POST")[-1].json()["contacts"]
    assert len(sent) == N - report.plan.quarantined  # type: ignore[union-attr]
    assert surveyed(world, report) == []


def test_a_store_from_before_definitions_surveys_nobody_even_with_a_mapping_change(
    tmp_path: Path, sims: Sims
) -> None:
    world = make_world(tmp_path, sims)
    world.write(list(rows(N)))
    world.sync()

    def forget() -> None:
        """As a store from before: no definitions, and fingerprints made another way."""
        store = world.store()
        try:
            with store.write() as c:
                c.execute("DELETE FROM digest_definitions")
                c.execute("UPDATE contacts SET rhash = rhash - 1")
        finally:
            store.close()

    forget()
    launches = sims.altcraft.count(LAUNCH)
    upgrade = world.sync()
    assert upgrade.plan is not None and upgrade.plan.unchanged == 0  # every row looked at
    assert upgrade.plan.notices() == []  # its hashes were the current definition's
    assert sims.altcraft.count(LAUNCH) == launches

    forget()  # and an upgrade applied with a mapping change at once
    (tmp_path / "altcraft.toml").write_text(altcraft_mapping('["Closed Date", "City"]'))
    upgrade = world.sync()
    assert sims.altcraft.count(LAUNCH) == launches
    assert upgrade.plan is not None
    assert upgrade.plan.notices()[0].startswith(
        f"altcraft: re-baselined {N} contacts, surveying none: no digest definition was recorded"
    )
