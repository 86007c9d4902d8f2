"""The push path against answers lost after the vendor acted, and the moments around them:
per vendor, what the ledger records and what the simulator holds must agree with the
promises (nothing marked sent unacknowledged, no trigger twice on syncd's own, an upsert
converges to the export, a kill anywhere loses nothing), and every message names the
vendor and says what to do.

What tests/test_faults.py (the push request's fault matrix), tests/test_crash.py and
tests/test_kill_loop.py (kills at named points and at random) already hold is not
repeated here."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.clock import SystemClock
from syncd.config import Config, load
from syncd.demo import SANDBOX_TABLES, write_config
from syncd.pipeline import RunReport, deliver, opened, reconcile
from syncd.sample import row, write_export
from syncd.sandbox import SIMULATORS, Stack
from syncd.sandbox.base import Server, Simulator
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store, iso
from syncd.vendors.base import Contact, Job
from tests.kits import kit_for
from tests.vendors.test_contract import deliver as contract_deliver
from tests.vendors.test_contract import make_connector


class One:
    """One vendor's simulator and a syncd folder pointed at it."""

    def __init__(self, folder: Path, stack: Stack, vendor: str, table: str = "") -> None:
        self.folder = folder
        self.vendor = vendor
        self.sim: Simulator = SIMULATORS[vendor]()
        url = stack.add(self.sim).url
        self.config = write_config(folder, {vendor: url}, {vendor: SANDBOX_TABLES[vendor] + table})
        (folder / "exports").mkdir()
        self.export = folder / "exports" / "contacts-1.csv"
        self.clock = SystemClock()
        self.kit = kit_for(vendor)

    @property
    def cfg(self) -> Config:
        return load(self.config)

    def write(self, n: int, version: dict[int, int] | None = None) -> None:
        rng = random.Random(11)
        write_export(self.export, [row(i, rng, (version or {}).get(i, 0)) for i in range(n)])

    def sync(self) -> RunReport:
        cfg = self.cfg
        with opened(cfg) as store:
            return reconcile(cfg, store, self.clock)

    def retry(self, *statuses: str) -> RunReport:
        cfg = self.cfg
        with opened(cfg) as store:
            return deliver(cfg, store, self.clock, list(statuses), [self.vendor])

    def rows(self) -> list[dict[str, Any]]:
        store = Store.open(self.cfg.store.path)
        try:
            return [dict(r) for r in store.query("SELECT * FROM deliveries ORDER BY id")]
        finally:
            store.close()


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack() as s:
        yield s


def test_retry_unknown_never_sends_a_trigger_older_than_one_acknowledged_since(
    tmp_path: Path, stack: Stack
) -> None:
    """A survey's answer is lost (unknown); the contact changes and its new survey is sent
    and acknowledged; then the operator runs `syncd retry --unknown`. The old payload must
    not go after the new one (stale data, and the vendor_state it leaves would make the
    next sync survey the new data a second time): it is superseded."""
    one = One(tmp_path, stack, "dropthought", "read_timeout = 0.5\n")
    one.write(3)
    one.sim.faults.add("delay", seconds=1.0, count=1, path="/dtapp/api/participant")
    one.sync()
    assert [r["status"] for r in one.rows()] == ["unknown", "pending", "pending"]
    first = one.rows()[0]["key"]
    one.write(3, {0: 1})  # the unknown contact changes: its new data is surveyed
    one.sync()
    assert one.kit.triggers is not None
    assert one.kit.triggers(one.sim)[first] == 2
    one.retry("failed", "unknown")
    one.sync()
    one.sync()
    by_status = {(r["key"], r["status"]) for r in one.rows()}
    assert (first, "unknown") not in by_status and (first, "pending") not in by_status
    assert one.kit.triggers(one.sim)[first] == 2, one.rows()


def test_an_export_back_to_the_data_of_an_older_unknown_delivery_sends_it_again(
    tmp_path: Path, stack: Stack
) -> None:
    """A (its survey's answer lost: unknown), then B (surveyed), then A again. The diff took
    the unknown delivery of A for one that carries A already, and the delivery loop (and
    `retry --unknown`) takes it for stale, as B was sent after it: A was never surveyed,
    and the vendor kept B. The unknown one is older than what the vendor acknowledged
    since, so it carries nothing: A is a change like any other."""
    one = One(tmp_path, stack, "dropthought", "read_timeout = 0.5\n")
    one.write(3)
    one.sim.faults.add("delay", seconds=1.0, count=1, path="/dtapp/api/participant")
    one.sync()
    first = one.rows()[0]["key"]
    one.write(3, {0: 1})  # B: surveyed
    one.sync()
    one.write(3)  # A again
    one.sync()
    assert one.kit.triggers is not None
    assert one.kit.triggers(one.sim)[first] == 3, one.rows()  # A (lost answer), B, A
    one.retry("unknown")  # the first A's outcome: superseded, never sent after the last
    one.sync()
    assert one.kit.triggers(one.sim)[first] == 3, one.rows()
    latest = [r for r in one.rows() if r["key"] == first][-1]
    assert latest["status"] == "sent"


@pytest.mark.parametrize("vendor", ["dropthought", "esputnik"])
def test_a_delivery_queued_before_its_contact_unsubscribed_is_held_back_not_sent(
    tmp_path: Path, stack: Stack, vendor: str
) -> None:
    """The vendor is down, so the first sync's deliveries stay pending; then the pull finds
    one contact unsubscribed (at another vendor). The next sync, of the same export, sent
    the queued survey anyway: the diff looks at changed rows only, and the delivery loop
    never looked at unsubscribes. It is `skipped` now with the reason, and the rest go."""
    one = One(tmp_path, stack, vendor)
    one.write(3)
    one.sim.faults.add("down")
    one.sync()
    queued = one.rows()
    assert {r["status"] for r in queued} == {"pending"}
    first = queued[0]["key"]
    email = json.loads(queued[0]["payload"])["fields"]["email"]
    store = Store.open(one.cfg.store.path)
    try:
        with store.write() as c:
            c.execute(
                "INSERT INTO unsubscribes (vendor, vendor_id, key, email, channel, at, pulled_at) "
                "VALUES ('signalvine', 'u1', NULL, ?, 'email', ?, ?)",
                # as a pull stores it: the email lower-cased, pulled after the queueing
                (email, iso(one.clock.now()), iso(one.clock.now())),
            )
    finally:
        store.close()
    one.sim.faults.clear()
    one.sync()
    got = {r["key"]: (r["status"], r["reason"]) for r in one.rows()}
    assert got[first][0] == "skipped", got
    assert "unsubscribed at signalvine" in got[first][1] and "after it was queued" in got[first][1]
    assert {s for k, (s, _r) in got.items() if k != first} == {"sent"}
    assert first not in one.kit.held(one.sim)


@pytest.mark.parametrize("vendor", ["dropthought", "esputnik"])
def test_a_pending_delivery_of_a_contact_gone_from_the_export_is_not_sent(
    tmp_path: Path, stack: Stack, vendor: str
) -> None:
    """Queued while the vendor was down, then the contact left the CRM: its delivery went
    out with the next run all the same (a survey, or a vendor contact, for someone the CRM
    no longer lists). It is superseded as gone; the contact, back, would be sent anew."""
    one = One(tmp_path, stack, vendor)
    one.write(20)
    one.sim.faults.add("down")
    one.sync()
    last = one.rows()[-1]["key"]
    one.sim.faults.clear()
    one.write(19)  # the last contact is gone (5%: within max_drop)
    one.sync()
    got = {r["key"]: (r["status"], r["reason"]) for r in one.rows()}
    assert got[last] == ("superseded", "gone from the export"), got[last]
    assert {s for k, (s, _r) in got.items() if k != last} == {"sent"}
    assert last not in one.kit.held(one.sim)
    one.write(20)  # back: sent as the new contact it is to the vendor
    one.sync()
    assert last in one.kit.held(one.sim)


# --- an async job the vendor answered for, then does not know -----------------------------
# (eSputnik's import session, SignalVine's command: expired, lost in a failover)
FORGOTTEN = {"esputnik": "/api/v1/importstatus/", "signalvine": "/v2/commands/"}


@pytest.mark.parametrize("vendor", list(FORGOTTEN))
def test_a_job_the_vendor_no_longer_knows_leaves_its_batch_pending_and_says_so(
    vendor: str, tmp_path: Path
) -> None:
    """The post was acknowledged with a job; its poll answers 404. The job's contacts are
    not sent (nobody acknowledged them) but pending, to go again; the vendor is not
    stopped as if its base_url were wrong (the post on that very URL just worked), and the
    reason names the vendor and the job and says the contacts go again."""
    kit = kit_for(vendor)
    sim = kit.simulator()
    with Server(sim) as server:
        extra = "batch_size = 2\npoll_first = 0\n" if vendor == "signalvine" else "batch_size = 2\n"
        connector = make_connector(kit, server.url, tmp_path, extra=extra)
        sim.faults.add("status", status=404, count=1, path=FORGOTTEN[vendor])
        contacts = [kit.contact(i) for i in range(4)]
        results, deliverer = contract_deliver(connector, contacts, tmp_path)
        held = set(kit.held(sim))
    assert deliverer.out.stopped is None, deliverer.out.stopped
    statuses = sorted(s for s, _r in results.values())
    assert statuses == ["pending", "pending", "sent", "sent"], results
    for key, (status, reason) in results.items():
        if status == "pending":
            assert reason and "again" in reason and "404" in reason, reason
            assert "base_url" not in reason, reason
        else:
            assert key in held


SYNCD = [sys.executable, "-m", "syncd.cli"]


def run(
    config: Path, command: str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`syncd <command>` in a process of its own (killed at `crash_at`, if given)."""
    env = {**os.environ, "SYNCD_LOG_LEVEL": "WARNING"}
    env.pop("SYNCD_CRASH_AT", None)
    if crash_at:
        env["SYNCD_CRASH_AT"] = crash_at
    proc = subprocess.run(
        [*SYNCD, "--config", str(config), *command.split()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc


def test_a_kill_while_renewing_a_refused_token_leaves_the_participant_pending_not_unknown(
    tmp_path: Path, stack: Stack
) -> None:
    """Dropthought answers the participant call 401 (a token it no longer takes): it did
    not act. syncd renews the token and is killed right after. Nothing reached Dropthought,
    so the restart sends the participant (once), instead of calling it `unknown` and
    waiting for an operator's `syncd retry --unknown`."""
    one = One(tmp_path, stack, "dropthought")
    one.write(1)
    one.sim.faults.add("status", status=401, count=1, path="/dtapp/api/participant")
    assert run(one.config, "sync", "token_renewed").returncode == -9
    assert one.kit.triggers is not None
    assert one.kit.triggers(one.sim) == {}
    assert run(one.config, "sync").returncode == 0
    assert [r["status"] for r in one.rows()] == ["sent"]
    assert list(one.kit.triggers(one.sim).values()) == [1]


def test_an_upsert_whose_resumed_job_failed_is_not_re_sent_over_the_newer_one_sent_since(
    tmp_path: Path,
) -> None:
    """Killed with v1's import session recorded; the contact changes (v2 pending); the
    restart polls v1's session, which ended in ERROR (v1 failed), and sends v2. The next
    run's requeue of failed deliveries must not post v1's old data over v2's: it is
    superseded (the vendor would hold old data while the ledger says v2)."""
    from syncd.push import Deliverer
    from tests.kits import esputnik
    from tests.test_push import NOW, queue

    kit = esputnik.KIT
    base = kit.contact(1)
    old = Contact(base.key, {**base.fields, "firstName": "Old"}, base.metadata)
    new = Contact(
        base.key, {**base.fields, "firstName": "New", "email": "new@example.com"}, base.metadata
    )
    sim = kit.simulator()
    assert isinstance(sim, ESputnikSim)
    with Server(sim) as server:
        connector = make_connector(kit, server.url, tmp_path)
        jobs: list[str] = []
        started = connector.start([old], lambda job, refused=(): jobs.append(job))
        assert isinstance(started, Job)
        sim.fail_import(old.fields["email"], "the import failed")
        store = Store.open(tmp_path / "s.db")
        queue(store, "esputnik", [(old, "in_flight", jobs[0]), (new, "pending", None)])
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert [r["status"] for r in store.query("SELECT status FROM deliveries")] == [
            "failed",
            "sent",
        ]
        store.requeue_failed("esputnik", 3, NOW)  # the next run
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = [tuple(r) for r in store.query("SELECT hash, status FROM deliveries ORDER BY id")]
        state = store.scalar("SELECT hash FROM vendor_state WHERE key = ?", (base.key,))
        store.close()
        posted = [
            c["firstName"]
            for r in sim.requests("/api/v1/contacts", "POST")
            for c in r.json()["contacts"]
        ]
    assert posted == ["Old", "New"], posted  # v1's session, then v2: never v1 again
    assert rows == [("Old", "superseded"), ("New", "sent")]
    assert state == "New"


@pytest.mark.parametrize("vendor", ["dropthought", "hellocustomer", "altcraft"])
def test_a_trigger_refused_401_is_pending_unspent_with_the_vendors_words(
    vendor: str, tmp_path: Path
) -> None:
    """401 says the vendor did not act: the batch is back to pending at once (not in
    flight, so a kill from then on cannot make it unknown), its attempt given back, and
    the ledger keeps why it waits."""
    kit = kit_for(vendor)
    sim = kit.simulator()
    with Server(sim) as server:
        connector = make_connector(kit, server.url, tmp_path)
        sim.faults.add("status", status=401, count=10, path=kit.push_path)
        results, deliverer = contract_deliver(connector, [kit.contact(1)], tmp_path)
    assert deliverer.out.stopped and vendor in deliverer.out.stopped
    assert f" in [vendors.{vendor}]" in deliverer.out.stopped  # what to check, and where
    assert [(s, (r or "")[:8]) for s, r in results.values()] == [("pending", "HTTP 401")]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT attempts FROM deliveries").fetchall() == [(0,)]


def test_a_signalvine_re_upload_whose_answer_is_lost_after_acting_goes_once_more_never_the_refused(
    tmp_path: Path,
) -> None:
    """Row mode past 1,000 errors: SignalVine added nothing and the good rows are uploaded
    again; that re-upload is applied but its answer lost. It is posted again (an upsert:
    harmless), carrying only the rows without an error; the ledger fails the refused rows
    with SignalVine's words and acknowledges the rest once the command that answered is
    complete."""
    from syncd.sandbox.signalvine import PROGRAM

    kit = kit_for("signalvine")
    sim = kit.simulator()
    contacts = [kit.contact(i) for i in range(1010)]
    with Server(sim) as server:
        connector = make_connector(kit, server.url, tmp_path, extra="poll_first = 0\n")
        assert kit.reject is not None
        for c in contacts[:1001]:
            kit.reject(sim, c, "no consent")
        push = f"/v2/programs/{PROGRAM}/participants"
        sim.faults.add("drop_after", count=1, after=1, path=push, method="POST")
        results, deliverer = contract_deliver(connector, contacts, tmp_path)
        posts = [r.json()["participants"].splitlines()[1:] for r in sim.requests(push, "POST")]
        holds = set(kit.held(sim))
        with sqlite3.connect(tmp_path / "s.db") as db:
            (job,) = {j for (j,) in db.execute("SELECT job FROM deliveries") if j} or {None}
    assert deliverer.out.stopped is None
    assert len(posts) == 3 and posts[1] == posts[2] and len(posts[1]) == 9  # the good rows
    assert sorted(s for s, _r in results.values()) == ["failed"] * 1001 + ["sent"] * 9
    assert {r for s, r in results.values() if s == "failed"} == {"no consent"}
    assert holds == {c.key for c in contacts[1001:]}
    assert job is None  # settled: no job left to resume


@pytest.mark.parametrize("vendor", list(FORGOTTEN))
def test_jobs_unknown_twice_in_a_row_stop_the_vendor_instead_of_posting_every_batch(
    vendor: str, tmp_path: Path
) -> None:
    """One job unknown is that job; every job unknown is the poll call that finds none (a
    moved endpoint, a proxy): posting every batch for nothing, run after run, would load
    the vendor with the whole backlog and acknowledge none. The second in a row stops the
    vendor, with a message that says what to check; everything stays pending."""
    kit = kit_for(vendor)
    sim = kit.simulator()
    with Server(sim) as server:
        extra = "batch_size = 2\npoll_first = 0\n" if vendor == "signalvine" else "batch_size = 2\n"
        connector = make_connector(kit, server.url, tmp_path, extra=extra)
        sim.faults.add("down", status=404, path=FORGOTTEN[vendor])
        contacts = [kit.contact(i) for i in range(8)]
        results, deliverer = contract_deliver(connector, contacts, tmp_path)
        posts = sim.count(kit.push_path, "POST")
    assert {s for s, _r in results.values()} == {"pending"}
    assert posts == 2
    assert deliverer.out.stopped and "404" in deliverer.out.stopped
    assert "in a row" in deliverer.out.stopped and "check" in deliverer.out.stopped
