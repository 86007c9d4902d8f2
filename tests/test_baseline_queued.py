"""`syncd sync --baseline` when a vendor's sends of the contacts are queued already: a
trigger vendor added to a known store, then `syncd sync --vendor <another>` (the diff is
recorded for every vendor), or the vendor down during the first sync. The fast path skips
the unchanged rows, so the diff never meets them: the baseline turns the vendor's queued
deliveries into acknowledgements itself (`DiffStore.baseline_queued`), or the service stays
refused and the next run surveys everyone. In process, with the in-memory vendors."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import cli
from syncd.errors import ConfigError
from syncd.sample import row, rows
from syncd.vendors.base import Status
from tests.helpers import AheadClock, assert_fingerprint_cache_holds
from tests.memory import MemoryWorld, Remote, memory_vendors
from tests.test_unbaselined import N, installed, known, start

REASON = "recorded as acknowledged without sending (--baseline)"
LINE = "{} queued, recorded as acknowledged without sending (--baseline)"


@pytest.fixture
def remotes() -> Iterator[dict[str, Remote]]:
    with memory_vendors(mem="upsert", shop="upsert", survey="trigger", poll="trigger") as found:
        yield found


def queued(folder: Path, remotes: dict[str, Remote], *added: str) -> MemoryWorld:
    """A store that knows N contacts (sent to `mem`), then vendors `added` to the config and
    `syncd sync --vendor mem`: each added vendor has a pending delivery per contact."""
    known(folder, remotes)
    world = installed(folder, remotes, "mem", *added)
    assert world.sync(vendors=["mem"]).exit_code == 0
    for name in added:
        assert list(world.ledger(name).values()) == ["pending"] * N
    return world


def sql(world: MemoryWorld, statement: str, params: tuple[object, ...] = ()) -> list[tuple]:
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn, conn:
        return conn.execute(statement, params).fetchall()


def deliveries(world: MemoryWorld, vendor: str) -> list[dict[str, object]]:
    return [d for d in world.deliveries() if d["vendor"] == vendor]


def test_a_baseline_acknowledges_the_surveys_a_sync_of_another_vendor_queued(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The colleague's scenario: the service refuses to start, `--baseline --vendor survey`
    as it says, then the service starts and nobody is surveyed, then or later."""
    world = queued(tmp_path, remotes, "survey")
    with pytest.raises(ConfigError, match="trigger vendor survey has acknowledged none"):
        start(world)
    hashes = {d["key"]: d["hash"] for d in deliveries(world, "survey")}

    report = world.sync(baseline=True, vendors=["survey"])
    assert report.exit_code == 0, report.summary()
    assert f"survey: {LINE.format(N)}" in report.summary()
    assert {(d["status"], d["reason"]) for d in deliveries(world, "survey")} == {
        ("superseded", REASON)
    }
    assert world.acknowledged("survey") == hashes
    assert start(world) == 0

    assert world.sync().exit_code == 0
    assert remotes["survey"].batches == []
    assert len(deliveries(world, "survey")) == N  # none queued again


def test_failed_dead_and_unknown_surveys_are_acknowledged_and_one_in_flight_is_left(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """In flight, it may be at the vendor: resuming it learns what became of it (a trigger's
    becomes `unknown`), which an acknowledgement would hide."""
    world = queued(tmp_path, remotes, "survey")
    keys = sorted(world.ledger("survey"))
    for key, status in zip(keys, ["failed", "dead", "unknown", "in_flight"], strict=False):
        sql(
            world,
            "UPDATE deliveries SET status = ?, attempts = 1 WHERE vendor = 'survey' AND key = ?",
            (status, key),
        )
    hashes = {d["key"]: d["hash"] for d in deliveries(world, "survey")}

    assert world.sync(baseline=True, vendors=["survey"]).exit_code == 0
    ledger = world.ledger("survey")
    assert ledger.pop(keys[3]) == "in_flight"
    assert set(ledger.values()) == {"superseded"}
    del hashes[keys[3]]
    assert world.acknowledged("survey") == hashes


def test_each_contact_is_acknowledged_as_the_export_holds_it_whatever_is_queued(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """Not a queued delivery's data, newest or not, nor an acknowledgement of other data:
    what the export holds, once a contact, and every queued delivery is superseded."""
    world = queued(tmp_path, remotes, "survey")
    hashes = {d["key"]: d["hash"] for d in deliveries(world, "survey")}
    first, second, *_ = sorted(world.ledger("survey"))
    copy = (
        "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, created_at, "
        "updated_at) SELECT run_id, vendor, key, kind, ?, ?, payload, created_at, updated_at "
        "FROM deliveries WHERE vendor = 'survey' AND key = ?"
    )
    sql(
        world,
        "UPDATE deliveries SET status = 'failed' WHERE vendor = 'survey' AND key = ?",
        (first,),
    )
    sql(world, copy, ("pending", 4242, first))
    sql(world, copy, ("sent", 777, second))
    sql(
        world,
        "INSERT INTO vendor_state (vendor, key, hash, acked_at) VALUES ('survey', ?, 777, 'x')",
        (second,),
    )

    report = world.sync(baseline=True, vendors=["survey"])
    assert report.exit_code == 0
    assert world.acknowledged("survey") == hashes
    assert f"survey: {LINE.format(N)}" in report.summary()
    assert [d["status"] for d in deliveries(world, "survey") if d["key"] == first] == [
        "superseded",
        "superseded",
    ]


def test_a_dry_run_baseline_says_what_it_would_acknowledge_and_writes_nothing(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = queued(tmp_path, remotes, "survey")
    output = dry_run_baseline(world)
    assert f"  survey: {LINE.format(N)}" in output.splitlines(), output
    assert remotes["survey"].batches == []


def dry_run_baseline(world: MemoryWorld) -> str:
    """`sync --dry-run --baseline --vendor survey`'s output; it exits 0 and leaves the store
    exactly as it was."""
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        before = list(conn.iterdump())
    config = str(world.folder / "syncd.toml")
    result = CliRunner().invoke(
        cli, ["--config", config, "sync", "--dry-run", "--baseline", "--vendor", "survey"]
    )
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        assert list(conn.iterdump()) == before
    return result.output


def test_a_baseline_of_one_vendor_leaves_the_others_queued_deliveries_alone(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = queued(tmp_path, remotes, "survey", "poll", "shop")
    assert world.sync(baseline=True, vendors=["survey"]).exit_code == 0
    assert set(world.ledger("survey").values()) == {"superseded"}
    for name in ("poll", "shop"):
        assert list(world.ledger(name).values()) == ["pending"] * N
        assert world.acknowledged(name) == {}


def test_a_baseline_of_every_vendor_acknowledges_an_upsert_vendors_queue_too(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """--baseline records the export as acknowledged by every vendor: an upsert vendor's
    queued sends of it are acknowledged as a trigger vendor's are (and as the diff already
    acknowledged the rows it met, an open delivery or not)."""
    world = queued(tmp_path, remotes, "survey", "shop")
    hashes = {d["key"]: d["hash"] for d in deliveries(world, "shop")}
    report = world.sync(baseline=True)
    assert report.exit_code == 0
    assert f"shop: {LINE.format(N)}" in report.summary()
    assert world.acknowledged("shop") == hashes
    assert world.sync().exit_code == 0
    assert remotes["shop"].batches == remotes["survey"].batches == []


def test_a_row_changed_since_its_send_was_queued_is_acknowledged_as_it_is_now(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The queued sends are acknowledged before the rows are compared, so a row the diff
    meets is acknowledged with its current data, not the older data queued for it: back to
    that older data later, it is a change, and is sent."""
    world = queued(tmp_path, remotes, "shop")
    data = list(rows(N))
    changed = [row(0, random.Random(0), version=1), *data[1:]]
    world.write(changed)
    report = world.sync(baseline=True, vendors=["shop"])
    assert report.exit_code == 0
    assert report.counts()["shop"]["baseline"] == 1
    assert report.counts()["shop"]["baseline_queued"] == N
    world.write(data)
    assert world.sync(vendors=["shop"]).exit_code == 0
    assert remotes["shop"].keys() == [data[0][0]]


def city_watched(folder: Path, remotes: dict[str, Remote]) -> tuple[MemoryWorld, list[list[str]]]:
    """A survey vendor watching City, every contact of the export surveyed once."""
    world = MemoryWorld(folder, {"survey": remotes["survey"]})
    (folder / "survey.toml").write_text(
        '[fields]\nemail = "Email"\n[trigger]\non_change = ["City"]\n', encoding="utf-8"
    )
    data = list(rows(N))
    world.write(data)
    assert world.sync().exit_code == 0
    return world, data


def test_a_stale_survey_still_queued_is_not_what_the_baseline_acknowledges(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """A contact surveyed for its City D, changed to D2 (that survey's outcome unknown),
    then back to D: the vendor holds D, the export says D, and the fast path skips the row.
    The baseline acknowledges D, what the export holds, not the queued D2, and supersedes
    the D2 survey: a later change to exactly D2 is a change, and surveys."""
    world, data = city_watched(tmp_path, remotes)
    surveyed_for = world.acknowledged("survey")
    key = data[0][0]
    moved = [row(0, random.Random(0), version=1), *data[1:]]
    remotes["survey"].script[key] = Status.UNKNOWN
    world.write(moved)
    assert world.sync().exit_code == 1  # the vendor stopped for the run
    assert world.ledger("survey")[key] == "unknown"
    del remotes["survey"].script[key]
    world.write(data)
    assert world.sync().exit_code == 0
    assert world.ledger("survey")[key] == "unknown"  # the trigger leaves it for the operator
    assert world.acknowledged("survey") == surveyed_for

    report = world.sync(baseline=True, vendors=["survey"])
    assert report.exit_code == 0, report.summary()
    assert f"survey: {LINE.format(1)}" in report.summary()
    assert world.acknowledged("survey") == surveyed_for
    assert world.ledger("survey")[key] == "superseded"

    world.write(moved)
    remotes["survey"].batches.clear()
    assert world.sync().exit_code == 0
    assert remotes["survey"].keys() == [key]


UNCHANGED = "{} acknowledged other data, recorded as the export holds them (--baseline)"


def unsubscribed_then_moved(folder: Path, remotes: dict[str, Remote]) -> tuple[MemoryWorld, str]:
    """A survey vendor watching City, everyone surveyed; then a contact unsubscribed and its
    City changed: its survey is skipped, and the vendor's acknowledgement stays the old
    City. The same export again: the fast path hides the row, nothing is queued for it."""
    world, data = city_watched(folder, remotes)
    key = data[0][0]
    sql(
        world,
        "INSERT INTO unsubscribes (vendor, vendor_id, key, channel, at, pulled_at) "
        "VALUES ('survey', 'u1', ?, 'email', 'x', 'x')",
        (key,),
    )
    world.write([row(0, random.Random(0), version=1), *data[1:]])
    assert world.sync().exit_code == 0
    assert world.ledger("survey")[key] == "skipped"
    assert world.sync().exit_code == 0  # the fast path: the row is unchanged
    return world, key


def test_a_baseline_acknowledges_a_contact_the_fast_path_hides_as_the_export_holds_it(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """--baseline: the vendor has everyone as the export holds them now, the contact whose
    survey was skipped (unsubscribed) included, though nothing is queued for it and the
    diff never meets its row. Resubscribed and changed in a column the vendor does not
    watch, it is not surveyed: its City is what the vendor was taken to have."""
    world, key = unsubscribed_then_moved(tmp_path, remotes)
    skipped = deliveries(world, "survey")[-1]
    assert (skipped["key"], skipped["status"]) == (key, "skipped")
    acked = world.acknowledged("survey")
    assert acked[key] != skipped["hash"]

    baseline_records(world, key, skipped["hash"], acked)
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        assert_fingerprint_cache_holds(conn)  # no contact was written: the cache still holds

    sql(world, "DELETE FROM unsubscribes")
    moved = row(0, random.Random(0), version=1)
    moved[1] = "Another"  # a column the vendor does not watch: the diff meets the row
    world.write([moved, *list(rows(N))[1:]])
    remotes["survey"].batches.clear()
    assert world.sync().exit_code == 0
    assert remotes["survey"].batches == []


def test_a_dry_run_baseline_counts_the_hidden_contacts_and_writes_nothing(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world, _key = unsubscribed_then_moved(tmp_path, remotes)
    output = dry_run_baseline(world)
    assert f"  survey: {UNCHANGED.format(1)}" in output.splitlines(), output


def test_a_skipped_survey_of_data_the_contact_has_left_is_not_what_the_baseline_acknowledges(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """Its survey skipped for City D2, the contact went back to D, which the vendor has: the
    newest delivery is of D2, but the export holds D, and D stays acknowledged (a digest of
    the row, not a delivery's hash, is what the baseline records)."""
    world, key = unsubscribed_then_moved(tmp_path, remotes)
    acked = world.acknowledged("survey")
    world.write(list(rows(N)))
    assert world.sync().exit_code == 0
    assert world.acknowledged("survey") == acked
    report = world.sync(baseline=True, vendors=["survey"])
    assert report.exit_code == 0, report.summary()
    assert "baseline_unchanged" not in report.counts()["survey"]
    assert world.acknowledged("survey") == acked
    assert world.ledger("survey")[key] == "skipped"


def baseline_records(world: MemoryWorld, key: str, digest: object, acked: dict) -> None:
    """`--baseline --vendor survey` records the one contact nothing is queued for as its
    skipped delivery's data (`digest`), the others' acknowledgements (`acked`) unchanged."""
    report = world.sync(baseline=True, vendors=["survey"])
    assert report.exit_code == 0, report.summary()
    assert f"survey: {UNCHANGED.format(1)}" in report.summary()
    assert report.counts()["survey"]["baseline_unchanged"] == 1
    assert world.acknowledged("survey") == {**acked, key: digest}


def held_back_then_baselined(
    folder: Path, remotes: dict[str, Remote]
) -> tuple[MemoryWorld, str, AheadClock]:
    """A survey vendor watching City, min_days_between_surveys = 30, everyone surveyed;
    a day later a contact's City changes: its survey is held back (skipped, "within
    min_days_between_surveys") and the vendor's acknowledgement stays the old City. The
    same export again (the fast path hides the row, nothing is queued for it), then
    `--baseline --vendor survey`."""
    world, data = city_watched(folder, remotes)
    config = folder / "syncd.toml"
    config.write_text(
        config.read_text("utf-8") + "[suppression]\nmin_days_between_surveys = 30\n", "utf-8"
    )
    world.clock = clock = AheadClock()
    clock.ahead = timedelta(days=1)
    key = data[0][0]
    world.write([row(0, random.Random(0), version=1), *data[1:]])
    assert world.sync().exit_code == 0
    held = deliveries(world, "survey")[-1]
    assert (held["key"], held["status"]) == (key, "skipped")
    assert "within min_days_between_surveys = 30" in str(held["reason"])
    assert world.sync().exit_code == 0  # the fast path: the row is unchanged
    acked = world.acknowledged("survey")
    assert acked[key] != held["hash"]

    baseline_records(world, key, held["hash"], acked)
    return world, key, clock


def test_a_baseline_acknowledges_a_survey_min_days_held_back_as_the_export_holds_it(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """--baseline: the vendor has everyone as the export holds them now, the contact whose
    survey min_days_between_surveys held back included. Its City going back, weeks later,
    to the City it was surveyed for is a change from what the baseline recorded, and is
    surveyed, once; left with the older acknowledgement, it was taken for unchanged and
    never surveyed."""
    world, key, clock = held_back_then_baselined(tmp_path, remotes)
    remotes["survey"].batches.clear()
    clock.ahead = timedelta(days=40)
    assert world.sync().exit_code == 0  # the same export, the days passed: nothing owed
    assert remotes["survey"].batches == []
    world.write(list(rows(N)))  # back to the City the survey was for
    assert world.sync().exit_code == 0
    assert remotes["survey"].keys() == [key]
    assert world.sync().exit_code == 0
    assert remotes["survey"].keys() == [key]


def test_baseline_with_no_rebaseline_is_refused_as_a_contradiction(tmp_path: Path) -> None:
    """`--no-rebaseline` asks for surveys a changed on_change makes due, `--baseline` for
    none: the pair was taken, and `--no-rebaseline` silently did nothing."""
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "none.toml"), "sync", "--baseline", "--no-rebaseline"]
    )
    assert result.exit_code == 2, result.output
    assert "choose one" in result.output
