"""The reconcile pipeline end to end: export on disk → eSputnik simulator over loopback."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from syncd import source
from syncd.cli import cli
from syncd.demo import SANDBOX_TABLES, mapping_text
from syncd.errors import GuardError
from syncd.pipeline import opened
from syncd.pull import pull
from syncd.sample import HEADER, row, rows
from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Page
from syncd.vendors.esputnik import ESputnik
from tests.helpers import World, assert_fingerprint_cache_holds, esputnik_table

PUSH = "/api/v1/contacts"


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim()
    with Server(app) as server:
        yield app, server


@pytest.fixture
def world(tmp_path: Path, sim: tuple[ESputnikSim, Server]) -> World:
    return World(tmp_path, {"esputnik": esputnik_table(sim[1].url)})


def held_keys(app: ESputnikSim) -> set[str]:
    return {c["externalCustomerId"] for c in app.contacts()}


def test_ten_thousand_contacts_then_nothing_then_only_the_delta(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    data = list(rows(10_000))
    world.write(data)
    first = world.sync()
    assert first.exit_code == 0, first.summary()
    assert app.count(PUSH, "POST") <= 4
    assert len(held_keys(app)) == 10_000 - first.plan.quarantined  # type: ignore[union-attr]

    before = len(app.requests())
    second = world.sync()
    assert second.exit_code == 0
    assert len(app.requests()) == before, "an identical export must send no request at all"

    rng = random.Random(3)
    mapped = rng.sample(range(10_000), 37)
    for i in mapped:
        data[i][1] = data[i][1] + "x"  # First Name: mapped
    unmapped = rng.sample(sorted(set(range(10_000)) - set(mapped)), 5)
    for i in unmapped:
        data[i][11] = "Changed ticket type"  # Ticket Type: no vendor maps it
    world.write(data)
    third = world.sync()
    assert third.exit_code == 0
    posts = app.requests(PUSH, "POST")[-1].json()["contacts"]
    assert app.count(PUSH, "POST") <= 5
    assert sorted(c["externalCustomerId"] for c in posts) == sorted(data[i][0] for i in mapped)


def test_rejected_contacts_carry_the_reason_and_are_resent_next_run(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    data = list(rows(20))
    victim = data[4]
    app.faults.reject(victim[3].strip().lower(), "mailbox does not exist")
    world.write(data)
    report = world.sync()
    assert report.exit_code == 1
    by_key = {d["key"]: d for d in world.deliveries()}
    assert by_key[victim[0]]["status"] == "failed"
    assert "mailbox does not exist" in by_key[victim[0]]["reason"]
    assert sum(d["status"] == "sent" for d in by_key.values()) == 19
    sent_once = app.count(PUSH, "POST")

    app.faults.clear()
    again = world.sync()
    assert again.exit_code == 0
    assert app.count(PUSH, "POST") == sent_once + 1
    retried = app.requests(PUSH, "POST")[-1].json()["contacts"]
    assert [c["externalCustomerId"] for c in retried] == [victim[0]]
    assert {d["key"]: d for d in world.deliveries()}[victim[0]]["status"] == "sent"


def test_a_contact_rejected_every_time_goes_dead_after_max_attempts(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    app, server = sim
    world = World(tmp_path, {"esputnik": esputnik_table(server.url, max_attempts=2)})
    data = list(rows(3))
    app.faults.reject(data[0][3].strip().lower(), "blocked")
    world.write(data)
    assert world.sync().exit_code == 1
    assert world.sync().exit_code == 1
    third = world.sync()
    statuses = {d["key"]: d["status"] for d in world.deliveries()}
    assert statuses[data[0][0]] == "dead"
    assert third.exit_code == 0  # dead rows wait for an operator; they do not fail every run


def test_faults_are_survived(world: World, sim: tuple[ESputnikSim, Server]) -> None:
    app, _ = sim
    world.write(list(rows(50)))
    app.faults.add("status", status=429, count=1, path=PUSH)
    app.faults.add("status", status=502, count=1, path="/api/v1/importstatus")
    app.faults.add("drop", count=1, path=PUSH)
    report = world.sync()
    assert report.exit_code == 0, report.summary()
    assert len(held_keys(app)) == 50 - report.plan.quarantined  # type: ignore[union-attr]


def test_a_vendor_down_leaves_pending_exit_1_then_a_later_run_completes(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    world.write(list(rows(30)))
    app.faults.add("down", status=503)
    report = world.sync()
    assert report.exit_code == 1
    assert {d["status"] for d in world.deliveries()} == {"pending"}
    assert held_keys(app) == set()
    app.faults.clear()
    later = world.sync()
    assert later.exit_code == 0
    assert {d["status"] for d in world.deliveries()} == {"sent"}


def test_a_vendor_that_refuses_everyone_is_stopped_not_tried_contact_by_contact(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    world.write(list(rows(64)))
    app.faults.add("down", status=400)  # e.g. a deleted segment: every request is refused
    report = world.sync()
    assert report.exit_code == 1
    assert "refused with the same reason" in (report.delivered["esputnik"].stopped or "")
    statuses = Counter(d["status"] for d in world.deliveries())
    assert statuses["failed"] == 5 and statuses["sent"] == 0
    assert statuses["pending"] == sum(statuses.values()) - 5


def test_a_half_length_export_is_refused_and_nothing_is_sent(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    data = list(rows(100))
    world.write(data)
    world.sync()
    before = len(app.requests())
    data[10][1] = "Changed"
    world.write(data[:50])
    with pytest.raises(GuardError) as err:
        world.sync()
    assert err.value.exit_code == 3
    assert "50 of 100" in str(err.value) and "--force" in str(err.value)
    assert len(app.requests()) == before
    assert world.sync(force=True).exit_code == 0


def test_dry_run_writes_nothing(world: World, sim: tuple[ESputnikSim, Server]) -> None:
    app, _ = sim
    world.write(list(rows(10)))
    report = world.sync(dry_run=True)
    assert report.plan and report.plan.vendors["esputnik"].counts["new"] > 0
    assert report.plan.vendors["esputnik"].samples
    assert app.requests() == []
    store = world.store()
    assert store.scalar("SELECT count(*) FROM deliveries") == 0
    assert store.scalar("SELECT count(*) FROM runs") == 0
    assert store.scalar("SELECT count(*) FROM contacts") == 0
    store.close()


def test_bad_rows_are_quarantined_with_line_and_reason(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    rng = random.Random(1)
    good = [row(i, rng) for i in range(5)]
    no_key = row(5, rng)
    no_key[0] = ""
    bad_email = row(6, rng)
    bad_email[3] = "nobody@"
    short = row(7, rng)[:4]
    world.write([*good, no_key, bad_email, short, list(good[1])])
    report = world.sync()
    store = world.store()
    found = {(r["line"], r["vendor"], r["reason"]) for r in store.query("SELECT * FROM quarantine")}
    store.close()
    reasons = sorted(r for _l, _v, r in found)
    assert any("empty key column" in r for r in reasons)
    assert any("invalid email 'nobody@'" in r for r in reasons)
    assert any("has 5 fields, the header has 15" in r for r in reasons)  # 4 + the trailing ";"
    assert any("duplicate key 'CRM-0000001'" in r for r in reasons)
    lines = sorted(line for line, _v, _r in found)
    # header is line 1; the first good row's Notes hold a newline (lines 2-3), so the
    # good rows take lines 2-7 and the bad ones are physical lines 8-11
    assert lines == [8, 9, 10, 11]
    assert report.plan and report.plan.quarantined == 4


@pytest.mark.parametrize("order", ["known row first", "changed row first"])
def test_a_contact_twice_changed_and_as_known_counts_each_row_once(
    world: World, sim: tuple[ESputnikSim, Server], order: str
) -> None:
    """A contact's changed row and its known (unchanged) row in one export: the first wins,
    the other is quarantined. With the changed row first, the known row further on was
    counted unchanged as well as quarantined: 21 rows read, 20 unchanged, 1 changed."""
    app, _ = sim
    data = list(rows(20))
    world.write(data)
    assert world.sync().exit_code == 0
    changed = [data[5][0], data[5][1] + "x", *data[5][2:]]
    known_first = order == "known row first"
    world.write([*data, changed] if known_first else [*data[:5], changed, *data[6:], data[5]])
    plan = world.sync().plan
    assert plan is not None
    counts = plan.counts()["esputnik"]
    assert (plan.rows_read, plan.quarantined) == (21, 1)
    assert (plan.unchanged, counts["unchanged"]) == ((20, 20) if known_first else (19, 19))
    assert counts.get("changed", 0) == (0 if known_first else 1)
    assert plan.unchanged + counts.get("changed", 0) + plan.quarantined == plan.rows_read
    held = {c["externalCustomerId"]: c for c in app.contacts()}
    assert held[data[5][0]]["firstName"] == (data[5][1] if known_first else changed[1])


def test_changes_repeats_and_gaps_across_many_blocks_give_the_exact_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "RAW_BYTES", 8192)  # many blocks, so many parts
    with Server(ESputnikSim()) as server:
        world = World(tmp_path, {"esputnik": esputnik_table(server.url)})
        data = list(rows(3000))
        world.write(data)
        assert world.sync().exit_code == 0
        data[5][1] += "x"  # a change
        data[9] = data[8]  # a known row twice in one part
        data[11][0] = ""  # no key
        del data[20:30]  # gone
        world.write([*data, *rows(7, start=5000), data[100]])  # new ones, a row again far on
        report = world.sync()
        plan = report.plan
        assert plan is not None
        assert (plan.rows_read, plan.quarantined, plan.unchanged, plan.gone) == (2998, 3, 2987, 12)
        assert plan.counts()["esputnik"]["new"] == 7
        assert plan.counts()["esputnik"]["changed"] == 1


@pytest.mark.parametrize("again", [True, False], ids=["a-row-again", "only-gone"])
def test_rows_renumbered_under_the_fingerprint_cache_cost_speed_not_correctness(
    world: World, again: bool
) -> None:
    """A VACUUM may renumber contacts' rowids and fires no trigger: the cache then names
    the wrong rows. Gone contacts and repeated rows (whichever finds it out first) must
    still reach the right contact, and the cache written after is right again."""
    data = list(rows(200))
    world.write(data)
    assert world.sync().exit_code == 0
    store = world.store()
    with store.write() as c:  # what a renumbering VACUUM does, as far as the cache can tell
        c.execute("UPDATE contacts SET rowid = rowid + 1000")
        assert c.execute("SELECT count(*) FROM fingerprint_cache").fetchone()[0] == 1
    store.close()

    gone = {r[0] for r in data[10:15]}
    world.write([*data[:10], *data[15:], *([data[50]] if again else [])])
    report = world.sync()
    assert report.plan is not None
    assert (report.plan.gone, report.plan.unchanged) == (5, 195)
    store = world.store()
    try:
        marked = {
            k for (k,) in store.conn.execute("SELECT key FROM contacts WHERE gone_at NOT NULL")
        }
        assert marked == gone
        reasons = [r for (r,) in store.conn.execute("SELECT reason FROM quarantine")]
        assert [r.split(":")[0] for r in reasons] == (
            [f"duplicate key {data[50][0]!r}"] if again else []
        )
        assert_fingerprint_cache_holds(store.conn)  # written with the rowids read again
    finally:
        store.close()
    report = world.sync()
    assert report.plan is not None and report.plan.unchanged == 195


def test_any_other_change_to_contacts_makes_the_fingerprint_cache_stale(world: World) -> None:
    """The diff's own writes move the generation once; anyone else's move it every time."""
    data = list(rows(50))
    world.write(data)
    assert world.sync().exit_code == 0
    changes = [
        "UPDATE contacts SET gone_at = '2026-01-01' WHERE key = ?",  # gone by hand
        "DELETE FROM contacts WHERE key = ?",  # forgotten
        "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at) "
        "VALUES (? || '-x', '{}', 1, 't', 't')",
    ]
    for i, sql in enumerate(changes):
        store = world.store()
        try:
            with store.write() as c:
                generation = store.scalar("SELECT generation FROM contacts_generation")
                c.execute(sql, (data[i][0],))
                assert store.scalar("SELECT generation FROM contacts_generation") > generation
        finally:
            store.close()
        report = world.sync()  # from the table, not the stale cache
        assert report.plan is not None
        assert report.plan.unchanged == 50 - (i < 2), sql


def test_the_same_rows_under_renamed_columns_are_other_contacts(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    """Fingerprints are of a row's bytes: with the header's names swapped, the same bytes
    mean other data for the vendor, and none of them may pass as unchanged."""
    data = list(rows(30))
    world.write(data)
    assert world.sync().exit_code == 0
    text = world.export.read_bytes()
    header, _, body = text.partition(b"\r\n")
    swapped = header.replace(b"First Name;Last Name", b"Last Name;First Name")
    assert swapped != header
    world.export.write_bytes(swapped + b"\r\n" + body)
    report = world.sync()
    assert report.exit_code == 0 and report.plan is not None
    differs = sum(r[1] != r[2] for r in data)
    assert report.plan.counts()["esputnik"]["changed"] == differs > 0
    held = {c["externalCustomerId"]: c for c in sim[0].contacts()}
    assert {held[r[0]]["firstName"] for r in data} == {r[2] for r in data}


def attributes(world: World) -> dict[str, dict[str, str]]:
    store = world.store()
    try:
        return {
            r["key"]: json.loads(r["attributes"])
            for r in store.query("SELECT key, attributes FROM contacts")
        }
    finally:
        store.close()


def fingerprints(world: World) -> dict[str, int]:
    store = world.store()
    try:
        return {r["key"]: r["rhash"] for r in store.query("SELECT key, rhash FROM contacts")}
    finally:
        store.close()


def test_columns_nothing_reads_renamed_in_the_crm_look_at_no_row_again(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    """Renaming unmapped columns (two swapped, one renamed) keeps every fingerprint, so the
    diff takes the fast path for every row; `contacts.attributes` takes the new names, a
    gone contact's too; and a changed row among them is still sent."""
    data = list(rows(30))
    world.write(data)
    assert world.sync().exit_code == 0
    world.write(data[1:])  # the first contact is gone
    assert world.sync().exit_code == 0
    before, sent = fingerprints(world), len(sim[0].contacts())
    text = world.export.read_bytes()
    header, _, body = text.partition(b"\r\n")
    renamed = header.replace(b"City;Country", b"Country;City").replace(b"Notes", b"Remarks")
    assert renamed != header
    world.export.write_bytes(renamed + b"\r\n" + body)
    report = world.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert report.plan.unchanged == 29
    assert fingerprints(world) == before  # no row was rewritten
    assert len(sim[0].contacts()) == sent
    city, country = HEADER.index("City"), HEADER.index("Country")
    for r in data:
        attrs = attributes(world)[r[0]]
        assert "Notes" not in attrs and attrs["Remarks"] == r[HEADER.index("Notes")]
        # by position: the column the export now calls Country is the one that was City
        assert (attrs["Country"], attrs["City"]) == (r[city], r[country])
    # the next export under the new names, with one mapped change: one send, fast otherwise
    edited = [list(r) for r in data[1:]]
    edited[3][HEADER.index("Last Name")] += "-x"
    edited[4][HEADER.index("Notes")] += " (unmapped)"
    world.write(edited)
    text = world.export.read_bytes()
    header, _, body = text.partition(b"\r\n")
    renamed = header.replace(b"City;Country", b"Country;City").replace(b"Notes", b"Remarks")
    world.export.write_bytes(renamed + b"\r\n" + body)
    report = world.sync()
    assert report.plan is not None
    assert report.plan.counts()["esputnik"]["changed"] == 1
    assert report.plan.unchanged == 27
    assert attributes(world)[edited[4][0]]["Remarks"] == edited[4][HEADER.index("Notes")]


def test_a_store_from_before_the_recorded_header_looks_at_no_row_again(world: World) -> None:
    """A store upgraded to m015 has no recorded header: its fingerprints were salted with
    the header's names as they are, so the first diff after the upgrade finds them all."""
    data = list(rows(20))
    world.write(data)
    assert world.sync().exit_code == 0
    before = fingerprints(world)
    store = world.store()
    try:
        with store.write() as c:
            c.execute("DELETE FROM export_header")
    finally:
        store.close()
    report = world.sync()
    assert report.plan is not None and report.plan.unchanged == 20
    assert fingerprints(world) == before


def test_a_row_quarantined_for_two_vendors_is_one_quarantined_row(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """eSputnik and Altcraft both need the email: a bad one is quarantined for each, and
    counted once."""
    with Server(AltcraftSim()) as altcraft:
        world = World(
            tmp_path,
            {
                "esputnik": esputnik_table(sim[1].url),
                "altcraft": (
                    f'base_url = "{altcraft.url}"\n' + SANDBOX_TABLES["altcraft"],
                    mapping_text("altcraft"),
                ),
            },
        )
        data = [row(i, random.Random(i)) for i in range(6)]
        data[2][3] = "nobody@"
        world.write(data)
        report = world.sync()
    entries = [q for q in world.deliveries() if q["key"] == data[2][0]]
    assert entries == []  # sent to neither
    assert report.plan is not None and report.plan.quarantined == 1
    line = report.summary()
    assert "6 rows, 1 quarantined" in line, line
    assert "esputnik: 5 new, 5 sent, 1 not sendable to it (quarantined)" in line, line


def test_pulled_records_of_the_wrong_type_are_coerced_or_skipped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile vendor answer: a dict where an id belongs is skipped with its reason, an id
    sent as a number is stored as text; the pull ends partial, saying how many it skipped."""
    records = [
        {"vendor_id": {"id": 1}, "email": "a@example.com"},
        {"vendor_id": 123, "email": "B@Example.com", "channel": "email"},
        {"vendor_id": "u3", "email": ["x@example.com"]},
        {"vendor_id": "u4", "email": "d@example.com", "at": "2026-01-02T03:04:05+00:00"},
        "not a record",
    ]

    def pull_stream(self: Any, stream: str, since: str | None, until: Any) -> Iterator[Page]:
        yield Page(records, "cursor-1")  # type: ignore[arg-type]

    monkeypatch.setattr(ESputnik, "pull", pull_stream)
    world.write([row(i, random.Random(i)) for i in range(3)])
    cfg = world.cfg
    with opened(cfg) as store:
        report = pull(cfg, store, world.clock)
        stored = store.query("SELECT vendor_id, email FROM unsubscribes ORDER BY vendor_id")
        run = store.query("SELECT status, exit_code, counts FROM runs WHERE kind = 'pull'")[0]
    assert [tuple(r) for r in stored] == [("123", "b@example.com"), ("u4", "d@example.com")]
    assert report.vendors["esputnik"].counts["invalid"] == 3
    assert (run["status"], run["exit_code"]) == ("partial", 1)
    assert json.loads(run["counts"]) == {"esputnik": {"unsubscribes": 2, "invalid": 3}}
    line = report.summary()
    assert "esputnik: 2 unsubscribes, 3 records skipped (fields of the wrong type" in line, line


def test_an_empty_pull_says_so(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def pull_stream(self: Any, stream: str, since: str | None, until: Any) -> Iterator[Page]:
        yield Page([], "cursor-1")

    monkeypatch.setattr(ESputnik, "pull", pull_stream)
    cfg = world.cfg
    with opened(cfg) as store:
        report = pull(cfg, store, world.clock)
    assert "esputnik: no new unsubscribes" in report.summary()
    assert "nothing to send" not in report.summary()


def test_sync_prints_failures_by_reason_and_the_dry_run_what_would_be_sent(
    world: World, sim: tuple[ESputnikSim, Server]
) -> None:
    app, _ = sim
    data = [row(i, random.Random(i)) for i in range(8)]
    data[0][3] = "  Mixed.Case@Example.COM "
    world.write(data)
    dry = CliRunner().invoke(
        cli, ["--config", str(world.folder / "syncd.toml"), "sync", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    # the normalised value the connector sends, not the export's cell
    assert "email: None → 'mixed.case@example.com'" in dry.output, dry.output
    assert "esputnik: 8 new" in dry.output

    app.faults.reject(data[3][3].strip().lower(), "mailbox does not exist")
    result = CliRunner().invoke(cli, ["--config", str(world.folder / "syncd.toml"), "sync"])
    assert result.exit_code == 1, result.output
    assert "esputnik: 1 failed — mailbox does not exist (keys: " + data[3][0] in result.output
    assert "already_" not in result.output
