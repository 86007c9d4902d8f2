"""All five vendors together, as an operator runs them: one vendor down, a trigger whose
outcome is unknown and the operator's retry, a baseline, suppression across vendors after
a pull, and `syncd status --json` against its documented schema."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd.clock import SystemClock
from syncd.config import Config, load
from syncd.demo import SANDBOX_TABLES, demo_rows, write_config
from syncd.pipeline import RunReport, deliver, opened, reconcile
from syncd.pull import pull
from syncd.sample import write_export
from syncd.sandbox import SIMULATORS, Stack
from syncd.sandbox.base import Simulator
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.status import collect, render
from tests.helpers import AheadClock

TRIGGERS = ("altcraft", "dropthought", "hellocustomer")


class Fleet:
    """Five simulators and a syncd folder pointed at them."""

    def __init__(self, folder: Path, stack: Stack, days: int = 30, **extra: str) -> None:
        """`days`: min_days_between_surveys (0: every trigger vendor surveys every contact
        due, for tests of each vendor's own behaviour)."""
        self.folder = folder
        self.sims: dict[str, Simulator] = {n: SIMULATORS[n]() for n in SANDBOX_TABLES}
        urls = {n: stack.add(sim).url for n, sim in self.sims.items()}
        start = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%d")
        tables = dict(SANDBOX_TABLES)
        tables["hellocustomer"] += f'first_date = "{start}"\n'  # one pull window: fewer paced calls
        for name, text in extra.items():
            tables[name] += text
        self.config = write_config(folder, urls, tables, days)
        (folder / "exports").mkdir()
        self.export = folder / "exports" / "contacts-1.csv"
        self.clock = SystemClock()

    @property
    def cfg(self) -> Config:
        return load(self.config)

    def write(self, n: int, version: dict[int, int] | None = None) -> None:
        write_export(self.export, demo_rows(n, version))

    def sync(self, **kw: Any) -> RunReport:
        cfg = self.cfg
        with opened(cfg) as store:
            return reconcile(cfg, store, self.clock, **kw)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        store = Store.open(self.cfg.store.path)
        try:
            return [tuple(r) for r in store.query(sql, params)]
        finally:
            store.close()

    def statuses(self, vendor: str) -> Counter[str]:
        return Counter(
            s for (s,) in self.query("SELECT status FROM deliveries WHERE vendor = ?", (vendor,))
        )


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack() as s:
        yield s


def test_one_vendor_down_leaves_the_other_four_synced_and_its_own_pending(
    tmp_path: Path, stack: Stack
) -> None:
    fleet = Fleet(tmp_path, stack, days=0)
    fleet.write(40)
    down = fleet.sims["signalvine"].faults.add("status", status=503, count=1000)
    report = fleet.sync()
    assert report.exit_code == 1
    for name in fleet.sims:
        statuses = fleet.statuses(name)
        if name == "signalvine":
            assert set(statuses) == {"pending"}
        else:
            assert set(statuses) == {"sent"}, (name, statuses)
    retries = fleet.cfg.vendors["signalvine"].delivery.retries
    assert 1000 - down.count == retries + 1  # one upload, retried, then left for next run
    fleet.sims["signalvine"].faults.clear()
    assert fleet.sync().exit_code == 0
    assert set(fleet.statuses("signalvine")) == {"sent"}


def test_a_read_timeout_on_a_trigger_is_unknown_listed_and_resent_only_on_retry(
    tmp_path: Path, stack: Stack
) -> None:
    fleet = Fleet(tmp_path, stack, dropthought="read_timeout = 0.5\n")
    fleet.write(5)
    fleet.sims["dropthought"].faults.add(
        "delay", seconds=1.0, count=1, path="/dtapp/api/participant"
    )
    report = fleet.sync()
    assert report.exit_code == 1
    assert fleet.statuses("dropthought")["unknown"] == 1
    status = collect(fleet.cfg, datetime.now(UTC))
    assert [a["status"] for a in status["attention"]] == ["unknown"]
    assert "syncd retry --unknown" in render(status)
    # the vendor was stopped for the run: the four after the unknown one wait
    assert fleet.statuses("dropthought")["pending"] == 4
    before = fleet.sims["dropthought"].count("/dtapp/api/participant")
    fleet.write(5, {0: 0})
    fleet.sync()  # the unknown trigger is never re-sent on syncd's own; the four go
    assert fleet.sims["dropthought"].count("/dtapp/api/participant") == before + 4
    assert fleet.statuses("dropthought")["unknown"] == 1
    before += 4
    cfg = fleet.cfg
    with opened(cfg) as store:
        retried = deliver(cfg, store, fleet.clock, ["unknown"], ["dropthought"])
    assert retried.exit_code == 0
    assert fleet.statuses("dropthought")["unknown"] == 0
    assert fleet.sims["dropthought"].count("/dtapp/api/participant") == before + 1


def test_baseline_records_without_surveying_then_only_real_triggers_go(
    tmp_path: Path, stack: Stack
) -> None:
    fleet = Fleet(tmp_path, stack, days=0)
    fleet.write(30)
    report = fleet.sync(baseline=True)
    assert report.exit_code == 0
    for name in TRIGGERS:
        assert fleet.sims[name].requests() == [] or name == "hellocustomer"
        assert fleet.statuses(name) == Counter()
    # a ticket closes for contact 4 (its Closed Date changes), the others only change city
    changed = {i: 1 for i in range(30)}
    fleet.write(30, changed)
    fleet.sync()
    for name in TRIGGERS:
        sent = {
            k
            for (k,) in fleet.query(
                "SELECT key FROM deliveries WHERE vendor = ? AND status = 'sent'", (name,)
            )
        }
        closed = {
            k
            for (k, d) in fleet.query(
                "SELECT key, json_extract(attributes, '$.\"Closed Date\"') FROM contacts"
            )
        }
        assert sent and sent <= closed, name


def test_unsubscribed_at_esputnik_is_never_triggered_elsewhere_and_the_skip_is_recorded(
    tmp_path: Path, stack: Stack
) -> None:
    fleet = Fleet(tmp_path, stack)
    fleet.write(12)
    assert fleet.sync().exit_code == 0
    esputnik = fleet.sims["esputnik"]
    assert isinstance(esputnik, ESputnikSim)
    victim = next(c for c in esputnik.contacts() if c.get("externalCustomerId") == "CRM-0000003")
    esputnik.unsubscribe(victim["email"])
    cfg = fleet.cfg
    with opened(cfg) as store:
        pulled = pull(cfg, store, fleet.clock, vendors=["esputnik"])
    assert pulled.vendors["esputnik"].counts["unsubscribes"] >= 1
    assert fleet.query("SELECT key FROM unsubscribes WHERE vendor = 'esputnik'") == [
        ("CRM-0000003",)
    ]
    before = {n: fleet.sims[n].count() for n in TRIGGERS}
    fleet.write(12, {3: 1, 2: 1})  # both rows change, each one's Closed Date too
    fleet.sync()
    skipped = fleet.query(
        "SELECT vendor, reason FROM deliveries WHERE key = 'CRM-0000003' AND status = 'skipped' "
        "AND run_id = (SELECT max(run_id) FROM deliveries)"
    )
    assert {v for v, _r in skipped} >= set(TRIGGERS)
    assert all("unsubscribed at esputnik" in r for _v, r in skipped)
    assert ("skipped", "unsubscribed") in {
        (s, r) for _v, s, r, _n in fleet.query("SELECT * FROM skipped_reasons")
    }
    # contact 2 was surveyed in the first run: min_days_between_surveys (30) holds it back
    other = fleet.query(
        "SELECT vendor, reason FROM deliveries WHERE key = 'CRM-0000002' AND status = 'skipped'"
    )
    assert {v for v, _r in other} == set(TRIGGERS)
    assert all("within min_days_between_surveys = 30" in r for _v, r in other)
    assert {n: fleet.sims[n].count() for n in TRIGGERS} == before  # no trigger went out


def test_a_contact_due_at_several_trigger_vendors_is_surveyed_by_one(
    tmp_path: Path, stack: Stack
) -> None:
    """min_days_between_surveys holds across trigger vendors within one run too: the first
    in the config surveys, the others record why they did not."""
    fleet = Fleet(tmp_path, stack)
    fleet.write(12)
    assert fleet.sync().exit_code == 0
    first = next(n for n in fleet.cfg.vendors if n in TRIGGERS)
    rows = fleet.query(
        "SELECT key, vendor, status, reason FROM deliveries WHERE vendor IN (?, ?, ?)", TRIGGERS
    )
    assert {k for k, _v, _s, _r in rows} == {f"CRM-{i:07d}" for i in range(12)}
    for key, vendor, status, reason in rows:
        if vendor == first:
            assert status == "sent", (key, reason)
        else:
            assert (status, reason) == (
                "skipped",
                f"surveyed by {first} in this run: within min_days_between_surveys = 30",
            )
    assert sum(fleet.sims[n].count() > 0 for n in TRIGGERS) == 1


def test_status_json_follows_its_documented_schema(tmp_path: Path, stack: Stack) -> None:
    fleet = Fleet(tmp_path, stack)
    fleet.write(10)
    fleet.sync()
    cfg = fleet.cfg
    with opened(cfg) as store:
        pull(cfg, store, fleet.clock, vendors=["esputnik", "signalvine"])
    data = json.loads(json.dumps(collect(cfg, datetime.now(UTC))))
    schema = json.loads(files("syncd").joinpath("status.schema.json").read_text("utf-8"))
    jsonschema.validate(data, schema)
    assert set(data["vendors"]) == set(SANDBOX_TABLES)
    assert data["runs"][0]["kind"] == "pull" and data["cursors"]
    assert data["quarantine"]["rows"]  # the demo export's bad rows


def _two_trigger_vendors(tmp_path: Path, stack: Stack) -> tuple[Any, Any, Any, AheadClock]:
    """Dropthought, then Altcraft, min_days_between_surveys = 3, a clock moved by days."""
    from syncd.demo import mapping_text
    from syncd.sandbox.altcraft import AltcraftSim
    from syncd.sandbox.dropthought import DropthoughtSim
    from tests.helpers import World

    dropthought, altcraft = DropthoughtSim(), AltcraftSim()
    urls = {
        name: stack.add(sim).url
        for name, sim in (("dropthought", dropthought), ("altcraft", altcraft))
    }
    world = World(
        tmp_path,
        {
            name: (f'base_url = "{urls[name]}"\n{SANDBOX_TABLES[name]}', mapping_text(name))
            for name in ("dropthought", "altcraft")
        },
    )
    config = tmp_path / "syncd.toml"
    config.write_text(
        config.read_text("utf-8") + "[suppression]\nmin_days_between_surveys = 3\n", "utf-8"
    )
    world.clock = clock = AheadClock()
    return world, dropthought, altcraft, clock


def test_a_survey_skipped_for_min_days_is_not_sent_later_when_another_column_changes(
    tmp_path: Path, stack: Stack
) -> None:
    """A skip for min_days_between_surveys is a suppression, not a deferral. A new contact
    is surveyed by Dropthought, and Altcraft skips it ("surveyed by dropthought in this
    run"); days later only its Notes change (a column no vendor maps), or it leaves the
    export and comes back as it was: Altcraft surveyed it then, for the change Dropthought
    had surveyed, since it never acknowledged the contact."""
    from syncd.sample import row

    world, dropthought, altcraft, clock = _two_trigger_vendors(tmp_path, stack)
    rng = __import__("random").Random(0)
    contacts = [row(i, rng) for i in range(3)]
    for c in contacts:
        c[10] = "2026-03-01 09:00:00"  # Closed Date
    world.write(contacts)
    assert world.sync().exit_code == 0
    assert sum(p["triggers"] for p in dropthought.participants()) == 3
    assert altcraft.triggers() == {}
    clock.ahead = timedelta(days=4)
    contacts[0][14] = "called back"  # Notes: mapped by nobody
    world.write(contacts[:2])  # contact 2 leaves the export
    assert world.sync(force=True).exit_code == 0
    world.write(contacts)  # ... and comes back unchanged
    assert world.sync().exit_code == 0
    assert altcraft.triggers() == {}
    assert sum(p["triggers"] for p in dropthought.participants()) == 3
    contacts[1][10] = "2026-03-05 09:00:00"  # a real change is surveyed, once
    world.write(contacts)
    assert world.sync().exit_code == 0
    assert sum(p["triggers"] for p in dropthought.participants()) == 4
    assert altcraft.triggers() == {}


def test_a_survey_queued_long_ago_still_holds_back_another_vendor_s_survey(
    tmp_path: Path, stack: Stack
) -> None:
    """min_days_between_surveys counts a survey still waiting to be sent (pending) however
    long ago it was queued: it goes when its vendor is next delivered to. Counted only when
    queued within the last min_days, a survey queued at Altcraft 4 days before (the contact's
    date unreadable for Dropthought then, a `sync --vendor dropthought`) was forgotten when
    its date changed again: Dropthought surveyed it, and Altcraft's old survey went too, in
    the same run — two surveys of one person within 3 days."""
    from syncd.sample import row

    world, dropthought, altcraft, clock = _two_trigger_vendors(tmp_path, stack)
    contact = row(0, __import__("random").Random(0))
    contact[10] = "2026-03-01 09:00:00"  # Closed Date
    other = row(1, __import__("random").Random(1))
    other[10] = ""
    world.write([contact, other])
    assert world.sync().exit_code == 0  # surveyed by Dropthought; Altcraft: within min_days
    assert dropthought.participants()[0]["record"]["CRM ID"] == contact[0]
    assert sum(p["triggers"] for p in dropthought.participants()) == 2
    clock.ahead = timedelta(days=4)
    contact[10] = "05/13/2026"  # month 13 under DMY: quarantined for Dropthought only
    world.write([contact, other])
    world.sync(vendors=["dropthought"])  # Altcraft's survey queued, not sent
    assert sum(altcraft.triggers().values()) == 0
    clock.ahead = timedelta(days=8)
    contact[10] = "2026-03-09 09:00:00"
    world.write([contact, other])
    world.sync()
    surveys = sum(
        p["triggers"] for p in dropthought.participants() if p["record"]["CRM ID"] == contact[0]
    ) + sum(altcraft.triggers().values())
    assert surveys == 2, "the contact was surveyed twice within min_days_between_surveys"
