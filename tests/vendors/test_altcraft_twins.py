"""CRM contacts sharing Altcraft's matching value (a household's email) are one Altcraft
profile: a run launches the first of them and skips the others, naming it
(`Altcraft.unsendable`). Here over several runs, the whole pipeline (diff, push) against
the Altcraft simulator over loopback: the skipped contact's event is not launched later
when its row is looked at again, as a survey skipped for min_days_between_surveys is not
(README *Suppression*); a new change of its trigger column is a new event, decided as any
change (min_days_between_surveys counts per contact)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.demo import SANDBOX_TABLES, mapping_text
from syncd.sample import HEADER, row
from syncd.sandbox import Stack
from syncd.sandbox.altcraft import AltcraftSim
from tests.helpers import AheadClock, World

EMAIL, SEGMENT, STORE, CLOSED, TICKET, NOTES = (
    HEADER.index(c) for c in ("Email", "Segment", "Store", "Closed Date", "Ticket Type", "Notes")
)
HOUSEHOLD = "family@example.com"


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack() as s:
        yield s


def household(
    tmp_path: Path, stack: Stack, days: int
) -> tuple[World, AltcraftSim, AheadClock, list[list[str]]]:
    """Altcraft alone, `min_days_between_surveys = days`; contacts A and B share an email
    (one profile), C is another person. All three baselined, then A's and B's tickets close
    in the same run: A is launched, B skipped naming A."""
    sim = AltcraftSim()
    url = stack.add(sim).url
    world = World(
        tmp_path,
        {
            "altcraft": (
                f'base_url = "{url}"\n{SANDBOX_TABLES["altcraft"]}',
                mapping_text("altcraft"),
            )
        },
    )
    config = tmp_path / "syncd.toml"
    config.write_text(
        config.read_text("utf-8") + f"[suppression]\nmin_days_between_surveys = {days}\n", "utf-8"
    )
    world.clock = clock = AheadClock()
    rng = random.Random(0)
    rows = [row(i, rng) for i in range(3)]
    rows[0][EMAIL] = rows[1][EMAIL] = HOUSEHOLD
    for r in rows:
        r[CLOSED] = ""
    world.write(rows)
    assert world.sync(baseline=True).exit_code == 0
    rows[0][CLOSED] = "2026-03-01 09:00:00"
    rows[1][CLOSED] = "2026-03-01 10:00:00"
    world.write(rows)
    assert world.sync().exit_code == 0
    assert sim.triggers() == {HOUSEHOLD: 1}
    assert sim.last()[HOUSEHOLD]["custom_data"]["crm_id"] == rows[0][0]
    statuses = [(d["key"], d["status"]) for d in world.deliveries()]
    assert statuses == [(rows[0][0], "sent"), (rows[1][0], "skipped")]
    assert world.deliveries()[1]["reason"].startswith(f"{rows[0][0]} has the same email")
    return world, sim, clock, rows


def edit(rows: list[list[str]], how: str) -> None:
    """B's row changes, but not its trigger column (Closed Date)."""
    b = rows[1]
    if how == "Segment":  # mapped: custom_data.segment
        b[SEGMENT] = "Platinum" if b[SEGMENT] != "Platinum" else "Bronze"
    elif how == "Ticket Type":  # mapped: content.ticket_type
        b[TICKET] += " (reopened)"
    else:  # Notes: a column no vendor maps
        b[NOTES] = "called back"


@pytest.mark.parametrize("how", ["Segment", "Ticket Type", "Notes", "gone and back"])
def test_a_skipped_household_member_is_not_launched_later_for_the_same_event(
    tmp_path: Path, stack: Stack, how: str
) -> None:
    """B's ticket closed in the run that launched A's profile for A's: B was skipped (one
    profile, not launched twice). A day later B's row changes in another column (mapped or
    not), or B leaves the export and comes back as it was: its row is looked at again, and
    Altcraft, which never acknowledged B's change, launched the profile for it then — the
    household surveyed twice for what the first run had decided to launch once."""
    world, sim, clock, rows = household(tmp_path, stack, days=0)
    clock.ahead = timedelta(days=1)
    if how == "gone and back":
        world.write([rows[0], rows[2]])
        assert world.sync(force=True).exit_code == 0
    else:
        edit(rows, how)
    world.write(rows)
    assert world.sync().exit_code == 0
    assert sim.triggers() == {HOUSEHOLD: 1}, "the household's profile was launched twice"
    assert [d["status"] for d in world.deliveries() if d["key"] == rows[1][0]] == ["skipped"]
    # ... and a new event of B's is launched, once
    clock.ahead = timedelta(days=2)
    rows[1][CLOSED] = "2026-03-03 09:00:00"
    world.write(rows)
    assert world.sync().exit_code == 0
    assert sim.triggers() == {HOUSEHOLD: 2}
    assert sim.last()[HOUSEHOLD]["custom_data"]["crm_id"] == rows[1][0]


def test_a_new_event_of_the_skipped_member_is_decided_per_contact(
    tmp_path: Path, stack: Stack
) -> None:
    """B's ticket closes again the next day: a new event, decided as any change. With
    min_days_between_surveys = 30 it still launches the profile: min_days counts a
    contact's own surveys (README *Suppression*, DESIGN.md "per contact"), and B was not
    surveyed — its skip named A. (A's own next change within the 30 days is held back.)"""
    world, sim, clock, rows = household(tmp_path, stack, days=30)
    clock.ahead = timedelta(days=1)
    rows[1][CLOSED] = "2026-03-02 09:00:00"
    world.write(rows)
    assert world.sync().exit_code == 0
    assert sim.triggers() == {HOUSEHOLD: 2}
    assert sim.last()[HOUSEHOLD]["custom_data"]["crm_id"] == rows[1][0]
    clock.ahead = timedelta(days=2)
    rows[0][CLOSED] = "2026-03-03 09:00:00"
    world.write(rows)
    assert world.sync().exit_code == 0
    assert sim.triggers() == {HOUSEHOLD: 2}
    last = [d for d in world.deliveries() if d["key"] == rows[0][0]][-1]
    assert last["status"] == "skipped" and "within min_days_between_surveys = 30" in last["reason"]


@pytest.mark.parametrize("first", ["dropthought", "altcraft", "hellocustomer"])
def test_min_days_counts_a_contact_s_surveys_not_its_household_s(
    tmp_path: Path, stack: Stack, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """The three trigger vendors, `min_days_between_surveys = 30`, contacts A and B sharing
    an email, each its own ticket closed on consecutive days. min_days holds across the
    vendors (the first in the config surveys, the others skip) but counts per contact, by
    design (README *Suppression* "a contact", DESIGN.md "per contact", `decide`'s facts are
    one contact's): B's survey the day after A's goes, to the same email, at the first
    vendor — at Altcraft the same profile. Only an opt-out is matched by email or phone.
    Pinned so that a change to per person is a decision, not an accident."""
    from syncd.sandbox.dropthought import DropthoughtSim
    from syncd.sandbox.hellocustomer import HelloCustomerSim
    from syncd.vendors.hellocustomer import HelloCustomer

    monkeypatch.setattr(HelloCustomer, "min_interval", 0.05)
    sims = {
        "dropthought": DropthoughtSim(),
        "altcraft": AltcraftSim(),
        "hellocustomer": HelloCustomerSim(min_interval=0.05, response_rate=0.0),
    }
    order = [first, *(v for v in sims if v != first)]
    world = World(
        tmp_path,
        {
            v: (f'base_url = "{stack.add(sims[v]).url}"\n{SANDBOX_TABLES[v]}', mapping_text(v))
            for v in order
        },
    )
    config = tmp_path / "syncd.toml"
    config.write_text(
        config.read_text("utf-8") + "[suppression]\nmin_days_between_surveys = 30\n", "utf-8"
    )
    world.clock = clock = AheadClock()
    rng = random.Random(0)
    rows = [row(i, rng) for i in range(3)]
    rows[0][EMAIL] = rows[1][EMAIL] = HOUSEHOLD
    for r in rows:
        r[CLOSED] = ""
    world.write(rows)
    assert world.sync(baseline=True).exit_code == 0

    def surveys() -> dict[str, list[str]]:
        """Per vendor, the keys surveyed at the household's email, in order."""
        dt, ac, hc = (sims[v] for v in ("dropthought", "altcraft", "hellocustomer"))
        assert isinstance(dt, DropthoughtSim) and isinstance(ac, AltcraftSim)
        assert isinstance(hc, HelloCustomerSim)
        got = {v: [] for v in sims}
        got["dropthought"] = [
            p["record"]["CRM ID"]
            for p in dt.participants()
            if p["record"].get("Email") == HOUSEHOLD
            for _ in range(p["triggers"])
        ]
        got["altcraft"] = [
            item["custom_data"]["crm_id"]
            for r in ac.requests("/api/v1.1/campaigns/triggers/", "POST")
            for item in r.json().get("data", [r.json()])
            if item.get("email") == HOUSEHOLD
        ]
        got["hellocustomer"] = [
            r["custom_UniqueID"] for r in hc.respondents() if r["email"] == HOUSEHOLD
        ]
        return got

    for day, who in ((1, 0), (2, 1)):
        clock.ahead = timedelta(days=day)
        rows[who][CLOSED] = f"2026-03-0{day} 09:00:00"
        world.write(rows)
        assert world.sync().exit_code == 0
    a, b = rows[0][0], rows[1][0]
    got = surveys()
    # one email surveyed twice within 30 days at one vendor: per contact, by design
    assert got == {v: [a, b] if v == first else [] for v in sims}, got
    skipped = [d for d in world.deliveries() if d["status"] == "skipped"]
    assert {(d["vendor"], d["key"]) for d in skipped} == {(v, k) for v in order[1:] for k in (a, b)}
    assert all("within min_days_between_surveys = 30" in d["reason"] for d in skipped)
