"""Stores that OLD releases of syncd wrote, opened by today's code.

Each folder of `tests/fixtures/upgrade/` (named by the commit that made it; see
`tests/fixtures/upgrade/README.md`) holds an old release's config, mappings, last export
and store, with data in every state. A copy of each is opened here as an operator who
upgraded syncd would: `status`, `check`, a `sync` of the same export against fresh
simulators, a `pull` from the old cursors, and every analyst view. Nothing the vendors
already had may be sent again (nor anyone surveyed again); what was open must still be.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlite_utils import Database

from syncd.analyst import EXAMPLES, RELATIONS
from syncd.cli import cli
from syncd.clock import SystemClock
from syncd.config import load
from syncd.errors import ConfigError, StoreError
from syncd.pipeline import opened, reconcile
from syncd.sandbox import SIMULATORS, Simulator, Stack
from syncd.state import Store
from syncd.state.schema import KNOWN, migrations
from syncd.vendors.hellocustomer import HelloCustomer
from tests.helpers import run_syncd, start_service

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
# each release's folder, and its store: one missing (a checkout that dropped the .db files)
# fails the tests that open it, never skips them
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "syncd.toml").exists())
SENDABLE = ("pending", "failed", "in_flight")


@dataclass
class Installed:
    folder: Path
    sims: dict[str, Simulator]
    old: dict[str, Any]  # what the old store held, read before today's code opened it

    @property
    def config(self) -> Path:
        return self.folder / "syncd.toml"

    def syncd(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.config), *args])

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.folder / "syncd.db")
        conn.row_factory = sqlite3.Row
        return conn


def snapshot(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        q = conn.execute
        return {
            "deliveries": q(
                "SELECT id, vendor, key, status, attempts, reason FROM deliveries"
            ).fetchall(),
            "vendor_state": q("SELECT vendor, key, ref, acked_at FROM vendor_state").fetchall(),
            "responses": q("SELECT vendor, response_id, key, email FROM responses").fetchall(),
            "answers": q("SELECT vendor, answer_id, response_id, score FROM answers").fetchall(),
            "nps": q("SELECT vendor, filter, period_start, nps FROM nps").fetchall(),
            "unsubscribes": q(
                "SELECT vendor, vendor_id, key, channel FROM unsubscribes"
            ).fetchall(),
            "cursors": dict(
                ((v, s), c) for v, s, c in q("SELECT vendor, stream, cursor FROM cursors")
            ),
            "contacts": q("SELECT key, attributes, gone_at FROM contacts").fetchall(),
            "quarantine": q("SELECT run_id, line, key, reason FROM quarantine").fetchall(),
            "runs": q("SELECT id, kind, status FROM runs").fetchall(),
            "raw": q("SELECT response_id, answered_at, raw FROM responses").fetchall(),
        }
    finally:
        conn.close()


@pytest.fixture(params=RELEASES)
def installed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Installed]:
    folder = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, folder)
    old = snapshot(folder / "syncd.db")
    # Hello Customer paces itself at 1 call/s: not the subject here
    monkeypatch.setattr(HelloCustomer, "min_interval", 0.0)
    with Stack() as stack:
        sims = {name: cls() for name, cls in SIMULATORS.items()}
        sims["hellocustomer"] = SIMULATORS["hellocustomer"](min_interval=0.0)  # type: ignore[call-arg]
        urls = {name: stack.add(sim).url for name, sim in sims.items()}
        text = folder.joinpath("syncd.toml").read_text("utf-8")
        for name, url in urls.items():  # the old simulators' ports are gone: point at these
            text = re.sub(
                rf'(\[vendors\.{name}\]\nbase_url = )"[^"]*"', rf'\1"{url}"', text, count=1
            )
        folder.joinpath("syncd.toml").write_text(text, "utf-8")
        yield Installed(folder, sims, old)


def received(inst: Installed) -> dict[str, list[str]]:
    """What each fresh simulator was sent, as CRM keys (one entry per send)."""
    with inst.db() as conn:
        by_email = dict(
            conn.execute("SELECT lower(email), key FROM contacts WHERE email IS NOT NULL")
        )
    sims: Any = inst.sims
    out = {
        "esputnik": [c["externalCustomerId"] for c in sims["esputnik"].contacts()],
        "signalvine": list(sims["signalvine"].participants_by_customer()),
        "altcraft": [
            by_email.get(email, email)
            for email, n in sims["altcraft"].triggers().items()
            for _ in range(n)
        ],
        "dropthought": [
            # the record is keyed by the list's metadata names: the email under "Email"
            by_email.get(str(_email(p["record"]) or p["primary_key"]).lower(), p["primary_key"])
            for p in sims["dropthought"].participants()
            for _ in range(p["triggers"])
        ],
        "hellocustomer": [
            by_email.get(str(r.get("email", "")).lower(), r.get("email"))
            for r in sims["hellocustomer"].respondents()
        ],
    }
    return out


def _email(record: dict[str, Any]) -> Any:
    """A Dropthought participant's email: under its list's EMAIL metadata name."""
    return record.get("Email", record.get("email"))


def open_before(inst: Installed, statuses: tuple[str, ...]) -> dict[str, set[str]]:
    """Per vendor, the keys whose latest delivery in the old store had one of `statuses`.
    A survey `min_days_between_surveys` held back is none of them: it is suppressed, not
    deferred (README *Suppression*), however long after the old release's run the upgrade
    comes (test_a_survey_held_back_before_the_upgrade_is_not_sent_when_the_days_have_passed)."""
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for id_, vendor, key, status, _, _reason in inst.old["deliveries"]:
        if (vendor, key) not in latest or latest[vendor, key][0] < id_:
            latest[vendor, key] = (id_, status)
    out: dict[str, set[str]] = {}
    for (vendor, key), (_, status) in latest.items():
        if status in statuses:
            out.setdefault(vendor, set()).add(key)
    return out


def test_status_and_check_read_the_old_store(installed: Installed) -> None:
    """Before the upgraded service has started, `status` leaves the old store alone (its
    migration would make it a store "from a newer syncd" to the old service still running)
    and says how it is read; once the service's start has migrated it, it is read whole."""
    with installed.db() as conn:
        before = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
    result = installed.syncd("status")
    assert isinstance(result.exception, StoreError), result.output  # exit 2 from `main`
    assert "written by an older syncd" in str(result.exception)
    with installed.db() as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")] == before
    Store.open(installed.folder / "syncd.db").close()  # what the restarted service does first
    result = installed.syncd("status")
    assert result.exit_code == 0, result.output
    assert "open deliveries" in result.output or "pending" in result.output
    result = installed.syncd("status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert {a["status"] for a in status["attention"]} == {"dead", "unknown"}
    held: dict[str, dict[str, int]] = {}
    for _, vendor, _, state, _, _ in installed.old["deliveries"]:
        if state in ("pending", "in_flight", "failed", "unknown", "dead"):
            held.setdefault(vendor, {}).setdefault(state, 0)
            held[vendor][state] += 1
    for vendor, counts in held.items():
        assert {k: v for k, v in status["vendors"][vendor].items() if v} == counts, vendor
    assert len(status["runs"]) == 5
    result = installed.syncd("check")
    assert result.exit_code == 0, result.output


def test_the_same_export_sends_only_what_was_open(installed: Installed) -> None:
    """A sync of the export the old release last read sends each vendor what was still
    pending or failed there, and nothing it had acknowledged; no survey is triggered
    again, and dead and unknown deliveries wait for an operator as before."""
    result = installed.syncd("sync")
    assert result.exit_code in (0, 1), result.output
    got = received(installed)
    sendable = open_before(installed, SENDABLE)
    for vendor, keys in got.items():
        assert len(keys) == len(set(keys)), (vendor, keys)  # nobody twice
        extra = set(keys) - sendable.get(vendor, set())
        assert not extra, f"{vendor} was sent what it had: {sorted(extra)}\n{result.output}"
    with installed.db() as conn:
        latest = {
            (r["vendor"], r["key"]): r["status"]
            for r in conn.execute(
                "SELECT vendor, key, status FROM deliveries d WHERE id = "
                "(SELECT max(id) FROM deliveries WHERE vendor = d.vendor AND key = d.key)"
            )
        }
    for vendor, keys in sendable.items():
        for key in keys:
            status = latest[vendor, key]
            # sent now, or held back for a reason (an opt-out pulled since it was queued)
            assert status in ("sent", "skipped", "failed"), (vendor, key, status)
            if status == "sent":
                assert key in got[vendor], (vendor, key)
    for vendor, keys in open_before(installed, ("dead", "unknown")).items():
        for key in keys:
            assert latest[vendor, key] in ("dead", "unknown"), (vendor, key)
    # a second sync of the same export sends nothing at all
    before = {v: len(k) for v, k in received(installed).items()}
    result = installed.syncd("sync")
    assert result.exit_code in (0, 1), result.output
    assert {v: len(k) for v, k in received(installed).items()} == before, result.output


def rewrite_export(inst: Installed, city: dict[str, str], column: str = "City") -> None:
    """The last export as a CRM would write it again (every row's bytes differ, so each
    is looked at), with these contacts' City changed (a column upsert vendors map and no
    trigger vendor watches), or another `column`."""
    [path] = (inst.folder / "exports").iterdir()
    text = path.read_text("utf-8-sig")
    delimiter = (
        ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    )
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    header = rows[0]
    k, c = header.index("Record ID"), header.index(column)
    for r in rows[1:]:
        if len(r) > c and r[k] in city:
            r[c] = city[r[k]]
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(
        rows
    )
    path.unlink()
    (inst.folder / "exports" / "contacts-5.csv").write_text(out.getvalue(), "utf-8", newline="")


def test_a_later_export_sends_only_what_differs(installed: Installed) -> None:
    """After the upgrade, the next export (every row's bytes changed, three contacts'
    City) sends those three to the vendors that map City and surveys nobody: a digest the
    old release stored is recognised whenever the diff meets it, not only in the first
    run after the upgrade."""
    result = installed.syncd("sync")
    assert result.exit_code in (0, 1), result.output
    first = received(installed)
    with installed.db() as conn:
        everywhere = [
            r[0]
            for r in conn.execute(
                "SELECT c.key FROM contacts c WHERE c.gone_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.key = c.key AND d.status != 'sent') "
                "AND (SELECT count(DISTINCT vendor) FROM deliveries d WHERE d.key = c.key) = 5 "
                "AND NOT EXISTS (SELECT 1 FROM unsubscribes u WHERE u.key = c.key "
                "OR u.email = c.email OR u.phone = c.phone) "
                "ORDER BY c.key"
            )
        ]
    moved = everywhere[:3]
    assert len(moved) == 3, everywhere
    rewrite_export(installed, {key: "Upgradeville" for key in moved})
    result = installed.syncd("sync")
    assert result.exit_code in (0, 1), result.output
    got = received(installed)
    new = {v: sorted((Counter(got[v]) - Counter(first[v])).elements()) for v in got}
    for vendor in ("altcraft", "dropthought", "hellocustomer"):
        assert new[vendor] == [], (vendor, new[vendor], result.output)
    for vendor in ("esputnik", "signalvine"):
        assert set(new[vendor]) <= set(moved), (vendor, new[vendor], result.output)
    assert set(new["esputnik"]) == set(moved), result.output  # it maps City: address.town


class Later(SystemClock):
    """The real clock, moved on by whole days."""

    def __init__(self, days: int) -> None:
        super().__init__()
        self.days = days

    def now(self) -> datetime:
        return super().now() + timedelta(days=self.days)


TRIGGERS = ("dropthought", "altcraft", "hellocustomer")  # in the config's order


@pytest.mark.parametrize("installed", ["78ff7f4"], indirect=True)
def test_a_survey_held_back_before_the_upgrade_is_not_sent_when_the_days_have_passed(
    installed: Installed,
) -> None:
    """README *Suppression*: a survey min_days_between_surveys held back is suppressed, not
    deferred: only a new change of its trigger columns is surveyed. The 78ff7f4 store
    (version-1 digests, no digest definitions) held back ten contacts' new Closed Date at
    every trigger vendor, a month after the old release had surveyed them. The first sync
    after the upgrade, 40 days on, re-baselined most (their vendor had acknowledged older
    data); but CRM-0000001 was new to Dropthought (its first survey's outcome unknown),
    and its skip, hashed the old way, was not taken for one of this very data: Dropthought
    was sent the Closed Date every trigger vendor had held back. The change after it is
    surveyed as any change: once, by the first trigger vendor."""
    held = {
        (vendor, key)
        for _, vendor, key, status, _, reason in installed.old["deliveries"]
        if status == "skipped" and "within min_days_between_surveys" in (reason or "")
    }
    assert {k for _, k in held} and {v for v, _ in held} == set(TRIGGERS)
    sims: Any = installed.sims
    sims["signalvine"].max_skew = 60 * 86400  # its clock is the real one, syncd's 40 days on
    clock = Later(days=40)
    cfg = load(installed.config)
    with opened(cfg) as store:
        report = reconcile(cfg, store, clock)
    assert report.exit_code in (0, 1), report.summary()
    with installed.db() as conn:
        this_run = conn.execute(
            "SELECT vendor, key, status, reason FROM deliveries WHERE run_id = ? "
            f"AND vendor IN {TRIGGERS!r}",
            (report.run_id,),
        ).fetchall()
    sent = [tuple(r) for r in this_run if (r["vendor"], r["key"]) in held]
    assert all(r[2] == "skipped" and "unsubscribed" in r[3] for r in sent), sent
    got = received(installed)
    assert all(got[v] == [] for v in TRIGGERS), (got, report.summary())

    key = sorted(k for _, k in held)[0]
    rewrite_export(installed, {key: "2026-03-01 09:00:00"}, column="Closed Date")
    cfg = load(installed.config)
    with opened(cfg) as store:
        report = reconcile(cfg, store, clock)
    assert report.exit_code in (0, 1), report.summary()
    got = received(installed)
    assert (got["dropthought"], got["altcraft"], got["hellocustomer"]) == ([key], [], []), (
        report.summary()
    )


def seed_responses(inst: Installed) -> list[str]:
    """Hello Customer's fresh simulator holds the responses the old release pulled (as
    the vendor served them, `responses.raw`), and two answered since (their ids), and an
    opt-out since."""
    sim: Any = inst.sims["hellocustomer"]
    with sim.lock:
        for response_id, answered_at, raw in inst.old["raw"]:
            when = datetime.fromisoformat(answered_at.replace("Z", "+00:00"))
            sim._responses[response_id] = json.loads(raw)
            bisect.insort(sim._answered, (when, response_id))
    now = datetime.now(UTC).replace(microsecond=0)
    new: list[str] = sim.add_responses(2, now - timedelta(minutes=3), now - timedelta(minutes=2))
    sim.unsubscribe("opted.out.since@example.com", now - timedelta(minutes=2))
    return new


def test_pull_continues_from_the_old_cursors(installed: Installed) -> None:
    """A pull reads on from each old cursor: the responses the old release stored are
    re-read in the lookback and stay one each, with their answers; what was answered
    since is added; the streams' cursors are kept."""
    new = seed_responses(installed)
    result = installed.syncd("pull")
    assert result.exit_code == 0, result.output
    now = snapshot(installed.folder / "syncd.db")
    ids = [r[1] for r in now["responses"]]
    assert sorted(ids) == sorted([r[1] for r in installed.old["responses"]] + new)
    old_answers = set(installed.old["answers"])
    assert old_answers <= set(now["answers"])
    assert len(now["answers"]) > len(old_answers)  # the new responses' answers
    assert len({(a[0], a[1]) for a in now["answers"]}) == len(now["answers"])
    assert len(now["unsubscribes"]) == len(installed.old["unsubscribes"]) + 1
    assert set(now["cursors"]) == set(installed.old["cursors"])
    assert (
        now["cursors"][("hellocustomer", "responses")]
        > installed.old["cursors"][("hellocustomer", "responses")]
    )
    result = installed.syncd("pull")  # and again: nothing new
    assert result.exit_code == 0, result.output
    assert len(snapshot(installed.folder / "syncd.db")["responses"]) == len(now["responses"])


def test_analyst_views_and_tables_hold_the_old_data(installed: Installed) -> None:
    store = Store.open(installed.folder / "syncd.db")  # today's migrations
    store.close()
    now = snapshot(installed.folder / "syncd.db")
    for table in ("contacts", "responses", "answers", "nps", "unsubscribes", "quarantine", "runs"):
        assert len(now[table]) == len(installed.old[table]), table
    assert sorted(now["deliveries"]) == sorted(installed.old["deliveries"])
    assert sorted(now["vendor_state"]) == sorted(installed.old["vendor_state"])
    assert now["cursors"] == installed.old["cursors"]
    conn = installed.db()
    try:
        assert [tuple(r) for r in conn.execute("PRAGMA integrity_check")] == [("ok",)]
        assert [tuple(r) for r in conn.execute("PRAGMA foreign_key_check")] == []
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert applied == KNOWN
        for relation in RELATIONS:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({relation.name})")]
            assert cols, relation.name
            if relation.columns:
                assert set(relation.columns) <= set(cols), (relation.name, cols)
            conn.execute(f"SELECT * FROM {relation.name}").fetchall()
        for example in EXAMPLES:
            conn.execute(example.sql).fetchall()
        assert conn.execute("SELECT count(*) FROM contact_status").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM answers_with_contact").fetchone()[0] == len(
            installed.old["answers"]
        )
        assert conn.execute("SELECT count(*) FROM nps_over_time").fetchone()[0] == len(
            installed.old["nps"]
        )
        assert conn.execute("SELECT count(*) FROM nps_from_answers").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM response_rate").fetchone()[0] > 0
        assert conn.execute("SELECT sum(n) FROM skipped_reasons").fetchone()[0] > 0
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
    # a second open is a no-op
    Store.open(installed.folder / "syncd.db").close()
    conn = installed.db()
    try:
        again = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        assert [tuple(r) for r in again] == [tuple(r) for r in schema]
    finally:
        conn.close()
    result = installed.syncd("schema")
    assert result.exit_code == 0, result.output


def schema_of(db: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("release", RELEASES)
def test_an_upgrade_stopped_in_a_migration_is_taken_up_again(
    release: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside any of the migrations an old store needs (the disk, a kill: its
    transaction is never committed) leaves the store as the last whole migration left it,
    and the next open finishes the upgrade to the schema a clean one makes."""
    clean = tmp_path / "clean.db"
    shutil.copy(FIXTURES / release / "syncd.db", clean)
    Store.open(clean).close()
    want = schema_of(clean)
    conn = sqlite3.connect(FIXTURES / release / "syncd.db")
    done = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")}
    conn.close()
    for entry in [m for m in migrations._migrations if m.name not in done]:
        db = tmp_path / f"{entry.name}.db"
        shutil.copy(FIXTURES / release / "syncd.db", db)

        def failing(d: Any, fn: Any = entry.fn) -> None:
            fn(d)  # the whole migration's work, then the disk fails before its record
            raise sqlite3.OperationalError("disk I/O error")

        with monkeypatch.context() as m:
            m.setattr(entry, "fn", failing)
            with pytest.raises(StoreError):
                Store.open(db)
        conn = sqlite3.connect(db)
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert [tuple(r) for r in conn.execute("PRAGMA integrity_check")] == [("ok",)]
        conn.close()
        assert applied == KNOWN[: KNOWN.index(entry.name)], entry.name
        Store.open(db).close()
        assert schema_of(db) == want, entry.name


@pytest.mark.parametrize(
    "theirs, failing, named",
    [
        # an index on the phones for their own queries, under the name m023 gives its own
        ("CREATE INDEX contacts_phone ON contacts(phone)", "m023_contacts_phone", "contacts_phone"),
        # a trigger whose table they dropped since: m021's UPDATE of runs fires it
        (
            "CREATE TABLE audit (id); CREATE TRIGGER runs_audit AFTER UPDATE ON runs "
            "BEGIN INSERT INTO audit VALUES (new.id); END; DROP TABLE audit",
            "m021_runs_delivered_before_m020",
            "audit",
        ),
    ],
    ids=["index", "trigger"],
)
def test_an_analysts_object_in_a_migrations_way_is_named_and_the_rest_waits(
    tmp_path: Path, theirs: str, failing: str, named: str
) -> None:
    """Something an analyst added to an old store that a migration trips over was
    "cannot open the store …: index contacts_phone already exists", with the hint to check
    [store] path and whether the file is damaged: neither is the matter. The error names
    the migration, what SQLite said and what to look at; the migrations before it stay
    applied, nothing of it is; once their object is out of the way the upgrade finishes."""
    folder = tmp_path / "a105efb"
    shutil.copytree(FIXTURES / "a105efb", folder)
    db = folder / "syncd.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(theirs)
    before = KNOWN[: KNOWN.index(failing)]
    proc = run_syncd(folder, "--config", "syncd.toml", "sync")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"syncd: the store {db} could not be migrated: {failing} failed"), first
    assert named in first and ".schema" in proc.stderr, proc.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")] == before
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("DROP INDEX IF EXISTS contacts_phone")
        conn.execute("DROP TRIGGER IF EXISTS runs_audit")
    Store.open(db).close()
    assert schema_of(db) == schema_of(fresh_store(tmp_path))


@pytest.mark.parametrize("release", ["78ff7f4", "bbb5e07"])  # the releases before m018
def test_m018_keeps_a_pulled_time_that_is_no_iso_time_as_it_came(
    tmp_path: Path, release: str
) -> None:
    """README: a time a vendor sends that does not read as a time is kept as it came
    (`syncd.pull._when` keeps these, and so must m018, converting what old pulls stored)."""
    db = tmp_path / "syncd.db"
    shutil.copy(FIXTURES / release / "syncd.db", db)
    texts = ["now", "2026", "45000", "12:30", "2026-01-05 10:00:00"]
    with closing(sqlite3.connect(db)) as conn, conn:
        for i, text in enumerate(texts):
            conn.execute(
                "INSERT INTO unsubscribes (vendor, vendor_id, channel, at, pulled_at) "
                "VALUES ('esputnik', ?, 'email', ?, '2026-01-01T00:00:00+00:00')",
                (f"odd-{i}", text),
            )
    Store.open(db).close()
    with closing(sqlite3.connect(db)) as conn:
        kept = [
            at
            for (at,) in conn.execute(
                "SELECT at FROM unsubscribes WHERE vendor_id GLOB 'odd-*' ORDER BY vendor_id"
            )
        ]
    # the last reads as ISO 8601 (no offset: UTC) and is converted, as the pull would
    assert kept == [*texts[:-1], "2026-01-05T10:00:00+00:00"]


def store_before(tmp_path: Path, migration: str) -> sqlite3.Connection:
    """A store as a syncd whose last migration was the one before `migration` left it."""
    conn = sqlite3.connect(tmp_path / "syncd.db")
    migrations.apply(Database(conn), stop_before=migration)
    return conn


def test_m024_leaves_an_opt_out_it_cannot_read_as_it_is(tmp_path: Path) -> None:
    """An email or phone an analyst's hand edit stored as a BLOB stopped the upgrade at m024
    (a TypeError from the phone's pattern), and no syncd started on the store again. It is
    left as it is; the text beside it is converted, as are the other opt-outs."""
    rows = {
        "blob-email": (b"Ann@Example.com", " +32 470 12 34 56 "),
        "blob-phone": (" Bob@Example.com", b"+32 470 12 34 57"),
        "blob-both": (b"\xff\xfe", b"\x00"),
        "nulls": (None, None),
        "blank": ("   ", "  "),
        "text": (" Cy@Example.com ", "0032 470 12 34 58"),
    }
    with closing(store_before(tmp_path, "m024_unsubscribes_reach_as_compared")) as conn, conn:
        for vendor_id, (email, phone) in rows.items():
            conn.execute(
                "INSERT INTO unsubscribes (vendor, vendor_id, email, phone, channel, at, "
                "pulled_at) VALUES ('esputnik', ?, ?, ?, 'email', ?, ?)",
                (vendor_id, email, phone, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
            )
    Store.open(tmp_path / "syncd.db").close()
    with closing(sqlite3.connect(tmp_path / "syncd.db")) as conn:
        got = {
            v: (e, p)
            for v, e, p in conn.execute("SELECT vendor_id, email, phone FROM unsubscribes")
        }
        assert [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations")] == KNOWN
    assert got == {
        "blob-email": (b"Ann@Example.com", "+32470123456"),
        "blob-phone": ("bob@example.com", b"+32 470 12 34 57"),
        "blob-both": (b"\xff\xfe", b"\x00"),
        "nulls": (None, None),
        "blank": (None, None),
        "text": ("cy@example.com", "+32470123458"),
    }


# tables whose rows are syncd's own bookkeeping, never an analyst's to edit
BOOKKEEPING = {"_sqlite_migrations", "contacts_generation", "fingerprint_cache", "unfinished_diff"}


@pytest.mark.parametrize("migration", KNOWN[1:])
def test_no_migration_stops_on_a_blob_where_text_is_stored(tmp_path: Path, migration: str) -> None:
    """A store at the migration before each one, with a row in every table whose every
    column (but the row ids) is a BLOB, as an analyst's hand edit can make, and NULL where
    a column may be: the upgrade goes through, and every BLOB is as it was (m024 stopped
    on one with a TypeError)."""
    conn = store_before(tmp_path, migration)
    conn.execute(
        "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', ?, 'ok')",
        ("2026-01-01T00:00:00+00:00",),
    )
    planted: dict[str, dict[str, Any]] = {}
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in (t for t in tables if t not in BOOKKEEPING):
        row: dict[str, Any] = {}
        for _cid, name, kind, _notnull, _default, pk in conn.execute(f"PRAGMA table_info({table})"):
            if name == "run_id" or (pk and kind.upper() == "INTEGER"):
                row[name] = 2 if table == "runs" else 1  # a row id; run 1 exists
            else:
                row[name] = b"\xff" + name.encode()
        conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        planted[table] = row
    # a NULL in each column that may hold one, in a row of its own
    conn.execute(
        "INSERT INTO unsubscribes (vendor, vendor_id, at, pulled_at) VALUES ('x', 'nulls', ?, ?)",
        ("2026-01-01T00:00:00+00:00",) * 2,
    )
    conn.execute(
        "INSERT INTO runs (id, kind, started_at, status) VALUES (3, 'reconcile', ?, 'ok')",
        ("2026-01-01T00:00:00+00:00",),
    )
    conn.commit()
    conn.close()
    Store.open(tmp_path / "syncd.db").close()
    with closing(sqlite3.connect(tmp_path / "syncd.db")) as conn:
        assert [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations")] == KNOWN
        for table, row in planted.items():
            columns = {c[1] for c in conn.execute(f"PRAGMA table_info({table})")}
            blobs = {k: v for k, v in row.items() if isinstance(v, bytes) and k in columns}
            first = next(iter(blobs))
            found = conn.execute(
                f"SELECT {', '.join(blobs)} FROM {table} WHERE {first} = ?", (blobs[first],)
            ).fetchall()
            assert found == [tuple(blobs.values())], table


def fresh_store(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.db"
    Store.open(path).close()
    return path


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("delivered", [True, False], ids=["delivered", "not-delivered"])
def test_a_trigger_vendor_down_at_an_old_first_sync_lets_the_service_start(
    release: str, delivered: bool, tmp_path: Path
) -> None:
    """An old store (no `runs.delivered` before m020) whose trigger vendor Dropthought
    acknowledged nothing: its surveys are all queued. Its first sync delivered to it and
    found it down: that run's counts say so, as bbb5e07 recorded it when made to (`stopped`,
    next to the diff's counts). m021 reads that: the surveys were asked for, the upgraded
    service starts. Queued by runs whose counts show no delivery to it (`syncd sync
    --vendor esputnik`), it is still refused, saying what to run."""
    shutil.copytree(FIXTURES / release, tmp_path / release)
    folder = tmp_path / release
    mine: dict[str, Any] = {"new": 30, "quarantined": 1}
    if delivered:
        mine["stopped"] = "dropthought: HTTP 503: injected by the sandbox"
    with closing(sqlite3.connect(folder / "syncd.db")) as conn, conn:
        conn.execute("DELETE FROM vendor_state WHERE vendor = 'dropthought'")
        conn.execute("DELETE FROM deliveries WHERE vendor = 'dropthought' AND run_id > 1")
        conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, reason = NULL, "
            "sent_at = NULL, vendor_ref = NULL WHERE vendor = 'dropthought'"
        )
        for run, counts in conn.execute("SELECT id, counts FROM runs WHERE kind = 'reconcile'"):
            counts = json.loads(counts)
            counts["dropthought"] = mine if run == 1 else {"quarantined": 1, "unchanged": 28}
            conn.execute("UPDATE runs SET counts = ? WHERE id = ?", (json.dumps(counts), run))
    config = folder / "syncd.toml"
    if delivered:
        assert start_service(config) == 0
        return
    with pytest.raises(ConfigError) as refused:
        start_service(config)
    assert "trigger vendor dropthought has acknowledged none" in str(refused.value)
    assert "`syncd sync --baseline --vendor dropthought`" in str(refused.value.hint)
    assert "`syncd sync --vendor dropthought`" in str(refused.value.hint)
