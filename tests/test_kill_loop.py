"""The random-moment kill loop: `syncd sync` SIGKILLed after a random wall-clock delay,
again and again, against all five simulators slowed so requests take a while, with the
same few contacts edited between kills. Unlike tests/test_crash.py (named crash points),
a kill here lands anywhere: in start-up, in the diff, between a request and its answer,
while a job is polled, while the acknowledgement is written.

In the end, after clean runs have drained the ledger:
- 0 stale: each upsert vendor holds exactly the export's current mapped values;
- 0 duplicate: no trigger vendor received two triggers for the same change (the same
  value of its `on_change` column, which this loop never repeats for a contact);
- 0 lost: every change the vendor received is `sent` or `unknown` in `deliveries`, every
  `sent` one was received, and every contact's current change was received or is
  `unknown`/`pending`; `vendor_state` holds the hash of what the vendor holds;
- `PRAGMA integrity_check` ok, nothing left `in_flight`.

The short loop runs in the default suite; the 200-kill loop is behind `-m slow`:
    .venv/bin/pytest -m slow tests/test_kill_loop.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from syncd.sample import row, write_export
from syncd.sandbox import Stack
from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.dropthought import DropthoughtSim
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import SignalVineSim
from tests.test_crash import SYNCD, Loop

CONTACTS = 24
HOT = range(1, 7)  # the contacts edited again and again (3 of them each iteration)
FLIP = (7, 8)  # contacts whose upsert fields flip back and forth (A, B, A, ...)
DELAY = 0.05  # seconds every simulator waits after acting, before it answers
CLEAN_EVERY = 6  # every n-th run is left to finish: its duration re-measures the spread
# no switch that makes a vendor unsubscribe or opt out contacts on its own: every contact
# must end up at every vendor (Hello Customer keeps its 1 call/s rule)
SIM_OPTIONS: dict[str, dict[str, Any]] = {"dropthought": {"access_ttl": 300}}
# the trigger column's value travels with every trigger, so each trigger a simulator
# received names the change it was for
EXTRA_METADATA = {
    "altcraft": '"custom_data.closed_date" = "Closed Date"\n',
    "hellocustomer": '"Closed Date" = "Closed Date"\n',
}
START = datetime(2026, 1, 1, 9, 0, 0)


def closed(step: int) -> str:
    """A contact's `Closed Date` at its `step`-th trigger change: never the same twice, and
    already in Dropthought's DATE format, so every vendor receives it unchanged."""
    return (START + timedelta(hours=step)).strftime("%Y-%m-%d %H:%M:%S")


def e164(value: str) -> str:
    """A phone as syncd sends it (E.164, national numbers read as Belgian), computed here
    with phonenumbers' full parser rather than syncd's own code."""
    return phonenumbers.format_number(
        phonenumbers.parse(value, "BE"), phonenumbers.PhoneNumberFormat.E164
    )


@dataclass
class Figures:
    iterations: int = 0
    runs: int = 0
    kills: int = 0
    stale: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unknown: int = 0
    left_running: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"kill loop: {self.kills} kills in {self.iterations} iterations ({self.runs} runs), "
            f"{len(self.stale)} stale, {len(self.duplicate)} duplicate, {len(self.lost)} lost, "
            f"{self.unknown} unknown, {self.left_running} runs left 'running', "
            f"{self.seconds:.1f} s"
        )


class KillLoop(Loop):
    """tests/test_crash.py's loop, with kills at random moments instead of named points."""

    def __init__(self, folder: Path, stack: Stack, seed: int, *, flip: bool) -> None:
        self.flip = flip  # whether the FLIP contacts flip back and forth too
        self.step: dict[int, int] = {}  # contact → its trigger changes so far
        self.flipped: dict[int, int] = {}
        self.rows: dict[str, list[str]] = {}  # the export as last written, by key
        self.n = CONTACTS  # contacts in the export (the base loop's `size` is unused)
        super().__init__(folder, stack, seed, SIM_OPTIONS)
        for name, extra in EXTRA_METADATA.items():
            path = folder / "mappings" / f"{name}.toml"
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("[metadata]\n", "[metadata]\n" + extra, 1), "utf-8")
        # (SignalVine's first poll is shortened by the base loop's TABLES: no kill lands in a
        # 2 s wait)
        for sim in self.sims.values():  # every request takes a while: kills land inside
            sim.faults.add("delay", seconds=DELAY, count=10**9)
        self.figures = Figures()
        self.spread = 1.0  # seconds a run takes, re-measured from the runs left to finish
        self.syncd = SYNCD  # the command line that starts syncd

    def write(self) -> None:
        rng = random.Random(self.rng.random())  # only the volatile column uses it
        data = []
        for i in range(self.n):
            r = row(i, rng, self.version.get(i, 0) + 2 * self.flipped.get(i, 0))
            r[10] = closed(self.step.get(i, 0))
            data.append(r)
        self.rows = {r[0]: r for r in data}
        self.ever |= set(self.rows)
        write_export(self.export, data)

    def edit(self) -> None:
        """A CRM day: three of the hot contacts change a mapped field and their closed date,
        the flippers flip, and now and then a new contact arrives."""
        for i in self.rng.sample(list(HOT), 3):
            self.version[i] = self.version.get(i, 0) + 1
            self.step[i] = self.step.get(i, 0) + 1
        for i in FLIP if self.flip else ():
            self.flipped[i] = 1 - self.flipped.get(i, 0)
        if self.rng.random() < 0.3:
            self.n += 1
        self.write()

    def launch(self, kill_after: float | None, command: str = "sync") -> int | None:
        """`syncd <command>`, SIGKILLed after `kill_after` seconds if still running; its
        exit status, or None when it was killed."""
        env = {**os.environ, "SYNCD_LOG_LEVEL": "WARNING"}
        env.pop("SYNCD_CRASH_AT", None)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self.syncd, "--config", str(self.config), command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.figures.runs += 1
        killed = False
        try:
            proc.wait(timeout=kill_after if kill_after is not None else 120)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                raise
            proc.send_signal(signal.SIGKILL)
            killed = True
        _, stderr = proc.communicate(timeout=30)
        assert "Traceback" not in stderr, stderr[-2000:]
        if os.environ.get("KILL_LOOP_DEBUG") and killed:
            print(f"run {self.figures.runs}: killed after {kill_after:.2f} s")
        if killed and proc.returncode == -signal.SIGKILL:
            self.figures.kills += 1
            return None
        assert proc.returncode in (0, 1), stderr[-2000:]
        if os.environ.get("KILL_LOOP_DEBUG"):
            print(
                f"run {self.figures.runs}: {time.monotonic() - started:.2f} s, exit {proc.returncode}"
            )
        if kill_after is None:
            self.spread = 0.5 * self.spread + 0.5 * (time.monotonic() - started)
        return proc.returncode

    def iterate(self) -> None:
        """One CRM edit, then one run: killed at a random moment, or left to finish."""
        self.figures.iterations += 1
        self.edit()
        if self.figures.iterations % CLEAN_EVERY == 0:
            if self.launch(None) == 0 and not self.open_work():
                # after a clean run every upsert vendor holds the export: not only at the end
                self.figures.stale += stale(self, *ledger(self))
        else:
            self.launch(self.rng.uniform(0.0, self.spread * 1.1))
        self.check_invariants()

    def drain(self) -> None:
        """Clean runs until one exits 0 with nothing left to send, or nothing moves."""
        before = None
        for _ in range(8):
            code = self.launch(None)
            left = self.open_work()
            if (code == 0 and not left) or left == before:
                return
            before = left

    def open_work(self) -> list[tuple[str, str, int]]:
        with closing(self.db()) as conn:
            return conn.execute(
                "SELECT vendor, status, count(*) FROM deliveries "
                "WHERE status IN ('pending', 'in_flight', 'failed', 'dead') GROUP BY 1, 2"
            ).fetchall()


# --- what each simulator holds ---------------------------------------------------------
def esputnik_view(r: list[str]) -> dict[str, Any]:
    """The export row as eSputnik must hold it (tests/kits' field names, normalised)."""
    return {
        "email": r[3].strip().lower(),
        "sms": e164(r[4]),
        "firstName": r[1],
        "lastName": r[2],
        "externalCustomerId": r[0],
        "town": r[5],
        "fields": {"101": r[8]},
    }


def esputnik_held(sim: ESputnikSim) -> dict[str, dict[str, Any]]:
    return {
        c["externalCustomerId"]: {
            "email": c["email"],
            "sms": c["sms"],
            "firstName": c["firstName"],
            "lastName": c["lastName"],
            "externalCustomerId": c["externalCustomerId"],
            "town": c.get("town"),
            "fields": {"101": (c.get("fields") or {}).get("101")},
        }
        for c in sim.contacts()
        if c.get("externalCustomerId")
    }


SIGNALVINE_FIELDS = ("phone", "first_name", "last_name", "email", "city", "language", "segment")


def signalvine_view(r: list[str]) -> dict[str, Any]:
    return {
        "phone": e164(r[4]),
        "first_name": r[1],
        "last_name": r[2],
        "email": r[3].strip(),  # a program variable, sent as exported (trimmed)
        "city": r[5],
        "language": r[7],
        "segment": r[8],
    }


def signalvine_held(sim: SignalVineSim) -> dict[str, dict[str, Any]]:
    return {
        key: {name: p.get(name) for name in SIGNALVINE_FIELDS}
        for key, p in sim.participants_by_customer().items()
    }


def received(name: str, sim: Any) -> list[tuple[str, str]]:
    """Every trigger the vendor acted on, as (CRM key, closed date), in order."""
    out: list[tuple[str, str]] = []
    if isinstance(sim, HelloCustomerSim):
        for r in sim.respondents():
            out.append((r["custom_UniqueID"], r["keyValues"].get("Closed Date", "")))
    elif isinstance(sim, DropthoughtSim):
        for req in sim.requests("/dtapp/api/participant/", "POST"):
            body = req.json()
            record = dict(zip(body["header"], body["data"], strict=True))
            out.append((record["CRM ID"], record["Closed Date"]))
        # every participant request logged was acted on (none is refused in this loop)
        assert len(out) == sum(p["triggers"] for p in sim.participants())
    elif isinstance(sim, AltcraftSim):
        for req in sim.requests("/api/v1.1/campaigns/triggers/start", "POST"):
            body = req.json()
            for item in body.get("data", [body]):
                custom = {**body.get("custom_data", {}), **item.get("custom_data", {})}
                out.append((custom["crm_id"], custom["closed_date"]))
        assert len(out) == sum(sim.triggers().values())
    else:
        raise AssertionError(f"{name} is not a trigger vendor")
    return out


def newest_sent(
    deliveries: dict[tuple[str, str], list[sqlite3.Row]], vendor: str, key: str
) -> sqlite3.Row | None:
    sent = [d for d in deliveries.get((vendor, key), []) if d["status"] == "sent"]
    return sent[-1] if sent else None


def ledger(
    loop: KillLoop,
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], list[sqlite3.Row]]]:
    """vendor_state's hashes and every delivery, by (vendor, key)."""
    conn = loop.db()
    conn.row_factory = sqlite3.Row
    try:
        state = {
            (r["vendor"], r["key"]): r["hash"] for r in conn.execute("SELECT * FROM vendor_state")
        }
        deliveries: dict[tuple[str, str], list[sqlite3.Row]] = {}
        for r in conn.execute("SELECT * FROM deliveries ORDER BY id"):
            deliveries.setdefault((r["vendor"], r["key"]), []).append(r)
    finally:
        conn.close()
    return state, deliveries


def stale(
    loop: KillLoop,
    state: dict[tuple[str, str], str],
    deliveries: dict[tuple[str, str], list[sqlite3.Row]],
) -> list[str]:
    """Upserts: what each vendor holds that is not the export, or that vendor_state does not
    say (the hash of the newest `sent` delivery, whose data the vendor holds)."""
    found = []
    for name, view, held in (
        ("esputnik", esputnik_view, esputnik_held),
        ("signalvine", signalvine_view, signalvine_held),
    ):
        holds: dict[str, dict[str, Any]] = held(loop.sims[name])  # type: ignore[operator]
        for key, r in loop.rows.items():
            want = view(r)
            if holds.get(key) != want:
                found.append(f"{name} {key}: holds {holds.get(key)}, export {want}")
                continue
            last = newest_sent(deliveries, name, key)
            if last is None or state.get((name, key)) != last["hash"]:
                found.append(f"{name} {key}: vendor_state is not its newest sent hash")
        if set(holds) - loop.ever:
            found.append(f"{name} holds keys never exported: {set(holds) - loop.ever}")
    return [f"iteration {loop.figures.iterations}: {p}" for p in found]


def check(loop: KillLoop) -> Figures:
    """The promises, counted: stale upserts, duplicate and lost triggers, the ledger."""
    figures = loop.figures
    conn = loop.db()
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        in_flight = conn.execute(
            "SELECT vendor, key FROM deliveries WHERE status = 'in_flight'"
        ).fetchall()
        assert not in_flight, [tuple(r) for r in in_flight]
        figures.unknown = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'unknown'"
        ).fetchone()[0]
        figures.left_running = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'running'"
        ).fetchone()[0]
    finally:
        conn.close()
    state, deliveries = ledger(loop)
    figures.stale += stale(loop, state, deliveries)

    # triggers: each change received once, and the ledger knows every one
    for name in ("hellocustomer", "dropthought", "altcraft"):
        got = received(name, loop.sims[name])
        counts = Counter(got)
        figures.duplicate += [
            f"{name} {k} {v}: {n} triggers" for (k, v), n in counts.items() if n > 1
        ]
        changes: dict[tuple[str, str], set[str]] = {}
        for (vendor, key), rows in deliveries.items():
            if vendor != name:
                continue
            for d in rows:
                value = json.loads(d["payload"])["metadata"]
                change = value.get("Closed Date") or value.get("custom_data.closed_date") or ""
                changes.setdefault((key, change), set()).add(d["status"])
        for change in counts:  # what the vendor acted on is sent (or unknown) in the ledger
            if not changes.get(change, set()) & {"sent", "unknown"}:
                figures.lost.append(f"{name} {change}: received, ledger says {changes.get(change)}")
        for change, statuses in changes.items():  # and what the ledger calls sent arrived
            if "sent" in statuses and change not in counts:
                figures.lost.append(f"{name} {change}: sent in the ledger, never received")
        for key, r in loop.rows.items():  # every contact's current change is accounted for
            change = (key, r[10])
            statuses = changes.get(change, set())
            if change not in counts and not statuses & {"unknown", "pending"}:
                figures.lost.append(f"{name} {change}: neither received nor open ({statuses})")
            last = newest_sent(deliveries, name, key)
            if last is not None and state.get((name, key)) != last["hash"]:
                figures.lost.append(f"{name} {key}: vendor_state is not its newest sent hash")
    return figures


def kill_loop(folder: Path, kills: int, seed: int, *, flip: bool = False) -> Figures:
    """Edit, run, kill at a random moment, until `kills` runs were killed; drain; check."""
    started = time.monotonic()
    with Stack() as stack:
        loop = KillLoop(folder, stack, seed, flip=flip)
        loop.launch(None)  # the first, full run measures how long a run takes
        loop.launch(loop.rng.uniform(0.0, loop.spread))
        while loop.figures.kills < kills:
            loop.iterate()
        loop.drain()
        figures = check(loop)
    figures.seconds = time.monotonic() - started
    print(figures.line())
    for problem in figures.stale + figures.duplicate + figures.lost:
        print("  " + problem)
    return figures


def assert_promises(figures: Figures) -> None:
    assert not figures.stale, figures.stale[:10]
    assert not figures.duplicate, figures.duplicate[:10]
    assert not figures.lost, figures.lost[:10]


def test_a_short_kill_loop(tmp_path: Path) -> None:
    figures = kill_loop(tmp_path, kills=10, seed=1)
    assert_promises(figures)


@pytest.mark.slow
def test_the_long_kill_loop(tmp_path: Path) -> None:
    figures = kill_loop(tmp_path, kills=200, seed=2)
    assert_promises(figures)


def test_a_reverted_change_is_not_left_behind_an_in_flight_upsert(tmp_path: Path) -> None:
    """A → B killed with B's eSputnik import recorded and in flight → back to A: after clean
    runs eSputnik holds A, not B."""
    with Stack() as stack:
        loop = KillLoop(tmp_path, stack, seed=5, flip=False)
        assert loop.launch(None) == 0  # A acknowledged everywhere
        key = "CRM-0000007"
        loop.flipped[7] = 1  # B
        loop.write()
        assert loop.run("sync", "job_recorded:1") == -9  # eSputnik's import of B in flight
        loop.flipped[7] = 0  # the CRM undoes the edit: A again
        loop.write()
        for _ in range(2):
            assert loop.launch(None) == 0
        state, deliveries = ledger(loop)
        found = [p for p in stale(loop, state, deliveries) if key in p]
    assert not found, found


def test_a_killed_run_is_closed_by_the_next(tmp_path: Path) -> None:
    """The next run, holding the instance lock, closes a killed run as `crashed`."""
    with Stack() as stack:
        loop = KillLoop(tmp_path, stack, seed=6, flip=False)
        assert loop.run("sync", "diff_committed") == -9
        assert loop.launch(None) == 0
        with closing(loop.db()) as conn:
            left = conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchall()
            crashed = conn.execute("SELECT id FROM runs WHERE status = 'crashed'").fetchall()
    assert left == [], f"runs still 'running' after a clean run: {left}"
    assert crashed == [(1,)]


@pytest.mark.slow
def test_the_kill_loop_with_reverted_edits(tmp_path: Path) -> None:
    figures = kill_loop(tmp_path, kills=60, seed=3, flip=True)
    assert_promises(figures)
