"""The delivery loop's ledger under kills: `in_flight` only while a request may be out, and
only the newest delivery of a contact is ever sent."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from threading import Event

import pytest

from syncd.clock import FakeClock
from syncd.push import Deliverer, _quoted
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.vendors import Connector, Contact
from syncd.vendors.base import Job, OnJob, Result
from tests.kits import esputnik, hellocustomer
from tests.vendors.test_contract import make_connector

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def queue(store: Store, vendor: str, rows: list[tuple[Contact, str, str | None]]) -> None:
    """Deliveries as a crashed run leaves them: (contact, status, job)."""
    run = store.start_run("test", NOW)
    with store.write() as c:
        for contact, status, job in rows:
            payload = json.dumps(
                {"fields": dict(contact.fields), "metadata": dict(contact.metadata)}
            )
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, job, "
                "attempts, created_at, updated_at) VALUES (?, ?, ?, 'changed', ?, ?, ?, ?, "
                "?, ?, ?)",
                (
                    run,
                    vendor,
                    contact.key,
                    status,
                    # the hash: which version this is (another vendor's kit: the key)
                    contact.fields.get("firstName", contact.key),
                    payload,
                    job,
                    1 if status == "in_flight" else 0,
                    NOW.isoformat(),
                    NOW.isoformat(),
                ),
            )


def renamed(i: int, first: str) -> Contact:
    c = esputnik.contact(i)
    return Contact(c.key, {**c.fields, "firstName": first}, c.metadata)


def test_a_stale_in_flight_upsert_is_superseded_on_resume_never_sent(tmp_path: Path) -> None:
    """Killed while an upsert was in flight, then the contact was edited: resume must not
    send the old payload beside (or after) the new one."""
    sim = esputnik.KIT.simulator()
    with Server(sim) as server:
        connector = make_connector(esputnik.KIT, server.url, tmp_path, extra="batch_size = 1\n")
        store = Store.open(tmp_path / "s.db")
        queue(
            store,
            "esputnik",
            [
                (renamed(1, "Old"), "in_flight", None),  # the kill left it in flight
                (renamed(1, "New"), "pending", None),  # the next export's change
                (renamed(2, "Stale"), "pending", None),  # two pending versions of one contact
                (renamed(2, "Fresh"), "pending", None),
            ],
        )
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = store.query("SELECT key, hash, status FROM deliveries ORDER BY id")
        state = {r["key"]: r["hash"] for r in store.query("SELECT key, hash FROM vendor_state")}
        store.close()
        bodies = [r.json() for r in sim.requests("/api/v1/contacts", "POST")]
        sent = [c["firstName"] for body in bodies for c in body["contacts"]]
    assert [(r["hash"], r["status"]) for r in rows] == [
        ("Old", "superseded"),
        ("New", "sent"),
        ("Stale", "superseded"),
        ("Fresh", "sent"),
    ]
    assert sorted(sent) == ["Fresh", "New"]  # the old payloads never left
    assert esputnik.KIT.held(sim)["K00001"]["firstName"] == "New"
    assert state == {"K00001": "New", "K00002": "Fresh"}  # what the vendor holds


def test_an_upsert_resumed_and_sent_again_in_the_same_run_is_counted_sent_not_pending(
    tmp_path: Path,
) -> None:
    """Put back to pending by resume, then sent by the same run: `sent`, never also `left
    pending` (which made every run after a crash end with exit 1)."""
    sim = esputnik.KIT.simulator()
    with Server(sim) as server:
        connector = make_connector(esputnik.KIT, server.url, tmp_path, extra="batch_size = 1\n")
        store = Store.open(tmp_path / "s.db")
        queue(store, "esputnik", [(esputnik.contact(1), "in_flight", None)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        store.close()
    assert out.counts == {"sent": 1}


class Killed(BaseException):
    """SIGKILL, as far as the store can tell: nothing after it runs."""


class KilledWhileSleeping(FakeClock):
    def sleep(self, seconds: float) -> None:
        raise Killed


def test_a_kill_during_pacing_leaves_the_batch_pending_not_unknown(tmp_path: Path) -> None:
    sim = hellocustomer.KIT.simulator()
    with Server(sim) as server:
        connector = make_connector(hellocustomer.KIT, server.url, tmp_path)
        connector.clock = connector.http.clock = KilledWhileSleeping()
        assert connector.http.pacer is not None
        connector.http.pacer.clock = connector.http.clock
        connector.http.pacer._next = float("inf")  # the next call must wait
        store = Store.open(tmp_path / "s.db")
        queue(store, "hellocustomer", [(hellocustomer.KIT.contact(1), "pending", None)])
        with pytest.raises(Killed):
            Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert tuple(store.query("SELECT status, attempts FROM deliveries")[0]) == ("pending", 0)
        store.close()
    assert sim.count(hellocustomer.KIT.push_path) == 0  # no byte left


def test_settle_records_each_status_as_one_row_at_a_time_did(tmp_path: Path) -> None:
    """One statement per status, the meaning of one per row: a failed delivery out of
    attempts is dead, a pending one gives its attempt back, a ref is kept when none comes,
    the job is cleared except for an unknown one, vendor_state takes the sent ones."""
    store = Store.open(tmp_path / "s.db")
    contacts = [esputnik.contact(i) for i in range(7)]
    queue(store, "esputnik", [(c, "in_flight", "J1") for c in contacts])
    with store.write() as c:
        c.execute("UPDATE deliveries SET attempts = id % 4")  # K00000 has id 1: 1 attempt
        c.execute("UPDATE deliveries SET vendor_ref = 'old' WHERE key IN ('K00000', 'K00001')")
        c.execute(
            "INSERT INTO vendor_state (vendor, key, hash, ref, acked_at) "
            "VALUES ('esputnik', 'K00001', 'v0', 'kept', '2026-01-01')"
        )
    ids = {r["key"]: r["id"] for r in store.query("SELECT key, id FROM deliveries")}
    outcomes: list[tuple[int, str, str, str | None, str | None]] = [
        (ids["K00000"], "K00000", "sent", None, "new-ref"),
        (ids["K00001"], "K00001", "sent", None, None),
        (ids["K00002"], "K00002", "failed", "bad email", None),  # attempts 3: dead
        (ids["K00003"], "K00003", "failed", "bad phone", None),  # attempts 0: failed
        (ids["K00004"], "K00004", "pending", "try later", None),  # attempts 1 -> 0
        (ids["K00005"], "K00005", "pending", None, None),  # attempts 2 -> 1
        (ids["K00006"], "K00006", "unknown", "no answer", None),
    ]
    later = datetime(2026, 3, 2, tzinfo=UTC)
    store.settle("esputnik", outcomes, later, max_attempts=3)
    got = {
        r["key"]: (r["status"], r["attempts"], r["reason"], r["vendor_ref"], r["job"], r["sent_at"])
        for r in store.query("SELECT * FROM deliveries")
    }
    ts = later.isoformat(timespec="seconds")
    assert got == {
        "K00000": ("sent", 1, None, "new-ref", None, ts),
        "K00001": ("sent", 2, None, "old", None, ts),
        "K00002": ("dead", 3, "bad email", None, None, None),
        "K00003": ("failed", 0, "bad phone", None, None, None),
        "K00004": ("pending", 0, "try later", None, None, None),
        "K00005": ("pending", 1, None, None, None, None),
        "K00006": ("unknown", 3, "no answer", None, "J1", None),
    }
    assert {r[0] for r in store.query("SELECT updated_at FROM deliveries")} == {ts}
    state = store.query("SELECT key, hash, ref, acked_at FROM vendor_state ORDER BY key")
    assert [tuple(r) for r in state] == [
        ("K00000", "First0", "new-ref", ts),
        ("K00001", "First1", "kept", ts),
    ]
    store.close()


def test_mark_record_and_supersede_change_only_their_ids(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(4)])
    ids = [r["id"] for r in store.query("SELECT id FROM deliveries ORDER BY id")]
    later = datetime(2026, 3, 2, tzinfo=UTC)
    store.mark_in_flight(ids[:2], later)
    store.record_job(ids[1:3], "J9", later)
    store.supersede(ids[3:], "a newer delivery replaces it", later)
    got = store.query("SELECT status, attempts, job, reason, updated_at FROM deliveries")
    ts = later.isoformat(timespec="seconds")
    assert [tuple(r) for r in got] == [
        ("in_flight", 1, None, None, ts),
        ("in_flight", 1, "J9", None, ts),
        ("pending", 0, "J9", None, ts),
        ("superseded", 0, None, "a newer delivery replaces it", ts),
    ]
    store.close()


# --- eSputnik's import sessions, several open at once -------------------------------------
def sessions(
    tmp_path: Path, server: Server, extra: str = ""
) -> tuple[Connector, Store, list[int], FakeClock]:
    """An eSputnik connector (2 contacts a batch, the kit's poll_every of 0.01 s, `extra`
    options) on a fake clock, and a store; the list counts the sessions open after each
    `start` and `poll`."""
    connector = make_connector(esputnik.KIT, server.url, tmp_path, extra=f"batch_size = 2\n{extra}")
    clock = FakeClock(NOW)
    connector.clock = connector.http.clock = clock
    opened: list[int] = []
    start, poll = connector.start, connector.poll
    live: set[str] = set()

    def counted_start(batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
        started = start(batch, on_job)
        if isinstance(started, Job):
            live.add(started.id)
        opened.append(len(live))
        return started

    def counted_poll(job: Job) -> list[Result] | None:
        results = poll(job)
        if results is not None:
            live.discard(job.id)
        opened.append(len(live))
        return results

    connector.start, connector.poll = counted_start, counted_poll  # type: ignore[method-assign]
    return connector, Store.open(tmp_path / "s.db"), opened, clock


def ledger(store: Store) -> dict[str, tuple[str, str | None, str | None]]:
    rows = store.query("SELECT key, status, job, reason FROM deliveries ORDER BY id")
    return {r["key"]: (r["status"], r["job"], r["reason"]) for r in rows}


def posted(sim: ESputnikSim) -> list[str]:
    """Every contact posted, in order (a contact twice if it was posted twice)."""
    bodies = [r.json() for r in sim.requests("/api/v1/contacts", "POST")]
    return [c["externalCustomerId"] for body in bodies for c in body["contacts"]]


def test_sessions_overlap_up_to_the_window_and_are_polled_together(tmp_path: Path) -> None:
    sim = ESputnikSim()  # a session finishes at its second poll
    with Server(sim) as server:
        connector, store, opened, clock = sessions(tmp_path, server, "open_sessions = 3\n")
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(10)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        store.close()
    assert out.counts == {"sent": 10}
    assert {s for s, _job, _r in got.values()} == {"sent"}
    assert max(opened) == 3  # the window: never more sessions open at once
    assert sim.count("/api/v1/importstatus") == 10  # two polls a session, none wasted
    assert posted(sim) == [f"K{i:05d}" for i in range(10)]  # each contact once, in order
    # one sleep per round, not per session: 5 sessions, 4 waits of poll_every
    assert clock.slept == pytest.approx([0.01] * 4)


def test_a_window_of_one_is_one_session_at_a_time(tmp_path: Path) -> None:
    sim = ESputnikSim()
    with Server(sim) as server:
        connector, store, opened, clock = sessions(tmp_path, server, "open_sessions = 1\n")
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(6)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        store.close()
    assert out.counts == {"sent": 6}
    assert max(opened) == 1
    assert clock.slept == pytest.approx(
        [0.01] * 3
    )  # post, poll, wait, poll: for each batch in turn


def test_a_session_ending_in_error_fails_its_contacts_amid_finished_ones(tmp_path: Path) -> None:
    sim = ESputnikSim()
    sim.fail_import(esputnik.contact(3).fields["email"], "the segment is closed")
    sim.faults.reject(esputnik.contact(4).fields["email"], "invalid address")
    with Server(sim) as server:
        connector, store, opened, _clock = sessions(tmp_path, server, "open_sessions = 4\n")
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(8)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        store.close()
    assert max(opened) == 4
    assert out.counts == {"sent": 5, "failed": 3}
    failed = "import session failed: the segment is closed"
    assert got == {
        "K00000": ("sent", None, None),
        "K00001": ("sent", None, None),
        "K00002": ("failed", None, failed),  # the session that ended in ERROR
        "K00003": ("failed", None, failed),
        "K00004": ("failed", None, "invalid address"),  # refused at once (failedContacts)
        "K00005": ("sent", None, None),  # the rest of its batch, imported
        "K00006": ("sent", None, None),
        "K00007": ("sent", None, None),
    }
    held = esputnik.KIT.held(sim)
    assert sorted(held) == ["K00000", "K00001", "K00005", "K00006", "K00007"]


def moved(i: int, first: str) -> Contact:
    """Contact i renamed, with an email of its own (so a stall of its old one is not its)."""
    c = renamed(i, first)
    return Contact(c.key, {**c.fields, "email": f"{first.lower()}{i}@example.com"}, c.metadata)


def acked(store: Store) -> dict[str, str]:
    return {r["key"]: r["hash"] for r in store.query("SELECT key, hash FROM vendor_state")}


def test_a_session_still_open_at_poll_timeout_is_held_and_no_newer_data_goes_before_it(
    tmp_path: Path,
) -> None:
    """A session given up at poll_timeout is still open at eSputnik, which may apply it
    after a newer one ("requests may be handled in a different order"). Left pending, the
    contact's next change went in a new session; the old one, applied after it, left
    eSputnik holding the old data while the store had the new one acknowledged."""
    sim = ESputnikSim()
    sim.stall_import(esputnik.contact(2).fields["email"])
    extra = "open_sessions = 4\npoll_timeout = 5\n"
    with Server(sim) as server:
        connector, store, _opened, _clock = sessions(tmp_path, server, extra)
        queue(store, "esputnik", [(renamed(i, "Old"), "pending", None) for i in range(6)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        assert out.counts == {"sent": 4, "in_flight": 2}
        stalled = {k: v for k, v in got.items() if v[0] != "sent"}
        assert sorted(stalled) == ["K00002", "K00003"]
        jobs = {job for _status, job, _reason in stalled.values()}
        assert len(jobs) == 1 and None not in jobs  # recorded: the next run polls it
        (job,) = jobs
        for status, _job, reason in stalled.values():
            assert status == "in_flight"
            assert f"import session {job} still IMPORTING (its status set 20" in (reason or "")
            assert "after 5 s of polling: held" in (reason or "")  # how long it has been open
        # the CRM changes K00002; the next run finds its old session still open
        queue(store, "esputnik", [(moved(2, "New"), "pending", None)])
        connector, _store, _opened, _clock = sessions(tmp_path, server, extra)
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert out.counts == {"in_flight": 2, "pending": 1}  # the new data is held back
        assert posted(sim).count("K00002") == 1
        newest = store.query("SELECT status, reason FROM deliveries ORDER BY id DESC LIMIT 1")
        assert newest[0]["status"] == "pending"
        assert f"held back: import session {job} still IMPORTING" in newest[0]["reason"]
        # eSputnik applies the old session at last; the next run reads it, then sends the new
        sim.release_import(esputnik.contact(2).fields["email"])
        connector, _store, _opened, _clock = sessions(tmp_path, server, extra)
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert out.counts == {"sent": 3}
        assert posted(sim).count("K00002") == 2
        # (its email stays: eSputnik never updates the dedupe_on field)
        assert esputnik.KIT.held(sim)["K00002"]["firstName"] == "New"
        assert acked(store)["K00002"] == "New"  # what the store says eSputnik holds: it does
        store.close()


def test_a_session_stalled_past_poll_timeout_then_applied_late_never_leaves_old_data(
    tmp_path: Path,
) -> None:
    """The vendor's truth after the stalled session is applied out of order, run by run:
    whatever the store records acknowledged is what eSputnik holds."""
    sim = ESputnikSim()
    sim.stall_import(esputnik.contact(0).fields["email"])
    extra = "open_sessions = 1\npoll_timeout = 5\n"
    with Server(sim) as server:
        connector, store, _o, _c = sessions(tmp_path, server, extra)
        queue(store, "esputnik", [(renamed(0, "Old"), "pending", None)])
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        queue(store, "esputnik", [(moved(0, "New"), "pending", None)])
        connector, _s, _o, _c = sessions(tmp_path, server, extra)
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        sim.release_import(esputnik.contact(0).fields["email"])  # applied after, maybe
        connector, _s, _o, _c = sessions(tmp_path, server, extra)
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        vendor = esputnik.KIT.held(sim)["K00000"]["firstName"]
        assert acked(store)["K00000"] == vendor == "New"
        store.close()


def test_syncd_retry_forget_jobs_gives_up_a_session_that_never_ends(tmp_path: Path) -> None:
    """The way out for a session eSputnik never ends: `syncd retry --forget-jobs` puts its
    contacts back to pending, the session forgotten, and they are sent again."""
    sim = ESputnikSim()
    sim.stall_import(esputnik.contact(1).fields["email"])
    with Server(sim) as server:
        connector, store, _o, _c = sessions(tmp_path, server, "poll_timeout = 5\n")
        queue(store, "esputnik", [(renamed(1, "Old"), "pending", None)])
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert ledger(store)["K00001"][0] == "in_flight"
        queue(store, "esputnik", [(moved(1, "New"), "pending", None)])
        assert store.forget_jobs("esputnik", NOW) == 1
        old = store.query("SELECT status, job, reason FROM deliveries ORDER BY id LIMIT 1")[0]
        assert (old["status"], old["job"]) == ("pending", None)
        assert "forgotten (syncd retry --forget-jobs)" in old["reason"]
        connector, _s, _o, _c = sessions(tmp_path, server, "poll_timeout = 5\n")
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        assert out.counts == {"superseded": 1, "sent": 1}  # the old data is never re-sent
        assert esputnik.KIT.held(sim)["K00001"]["firstName"] == "New"
        store.close()


def test_a_stop_request_leaves_open_sessions_in_flight_and_the_next_run_polls_them(
    tmp_path: Path,
) -> None:
    sim = ESputnikSim()
    stop = Event()
    with Server(sim) as server:
        connector, store, opened, _clock = sessions(tmp_path, server, "open_sessions = 4\n")
        start = connector.start

        def start_then_stop(batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
            started = start(batch, on_job)
            if len(sim.requests("/api/v1/contacts", "POST")) == 3:
                stop.set()  # Ctrl-C while three sessions are open
            return started

        connector.start = start_then_stop  # type: ignore[method-assign]
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(10)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3, stop=stop).run()
        got = ledger(store)
        assert out.counts == {}  # nothing ended
        assert opened[-1] == 3
        jobs = {job for status, job, _r in got.values() if status == "in_flight"}
        assert len(jobs) == 3 and None not in jobs  # each open session recorded
        assert [k for k, v in got.items() if v[0] == "in_flight"] == [f"K{i:05d}" for i in range(6)]
        assert {v[0] for k, v in got.items() if k >= "K00006"} == {"pending"}
        # the next run: the recorded sessions are polled, never posted again
        again = make_connector(esputnik.KIT, server.url, tmp_path, extra="batch_size = 2\n")
        again.clock = again.http.clock = FakeClock(NOW)
        out = Deliverer(store, again, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        store.close()
    assert out.counts == {"sent": 10}
    # the three sessions reopened are polled together: one wait for all of them, then two
    # for the last two batches (four when each was followed to its end in turn)
    assert again.clock.slept == pytest.approx([0.01] * 3)
    assert {s for s, _job, _r in got.values()} == {"sent"}
    assert posted(sim) == [f"K{i:05d}" for i in range(10)]  # each contact once
    assert set(sim.state()["sessions"].values()) == {"FINISHED"}


def test_an_ended_session_is_settled_behind_the_next_request_and_all_before_the_end(
    tmp_path: Path,
) -> None:
    """An ended session's outcomes wait for the next batch's in-flight mark and are written
    beside its request (`_Behind`); the next use of the store waits for them."""
    sim = ESputnikSim()
    with Server(sim) as server:
        connector, store, _opened, _clock = sessions(tmp_path, server, "open_sessions = 2\n")
        start = connector.start
        before: list[str] = []  # the first contact's status as each batch starts
        after: list[str] = []  # and once its session is recorded (a use of the store)

        def start_and_look(batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
            def look(job: str, refused: Sequence[Result] = ()) -> None:
                on_job(job, refused)
                after.append(ledger(store)["K00000"][0])

            before.append(ledger(store)["K00000"][0])
            return start(batch, look)

        connector.start = start_and_look  # type: ignore[method-assign]
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(8)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        store.close()
    assert out.counts == {"sent": 8}
    assert {s for s, _job, _r in got.values()} == {"sent"}
    # session 1 ended in the round that made room for batch 3 (the window is two), and was
    # written beside batch 3's request: still in flight as batch 3 started, sent once it went
    assert before[2] == "in_flight"
    assert after[2] == "sent"
    assert posted(sim) == [f"K{i:05d}" for i in range(8)]


def test_a_settle_behind_a_request_that_fails_is_raised_and_its_batch_stays_in_flight(
    tmp_path: Path,
) -> None:
    """The store refusing a write on the settle thread fails the delivery as a failed
    settle in place would: nothing of that session is marked sent, its job stays recorded
    for `resume`, and the error is the store's."""
    from syncd.errors import StoreError

    sim = ESputnikSim()
    with Server(sim) as server:
        connector, store, _opened, _clock = sessions(tmp_path, server, "open_sessions = 2\n")
        settle = store.settle

        def full_disk(*args: object, **kwargs: object) -> None:
            if threading.current_thread() is not threading.main_thread():
                raise StoreError("the store's disk is full")
            settle(*args, **kwargs)  # type: ignore[arg-type]

        store.settle = full_disk  # type: ignore[method-assign]
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(8)])
        with pytest.raises(StoreError, match="disk is full"):
            Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        got = ledger(store)
        store.close()
    assert got["K00000"][0] == "in_flight" and got["K00000"][1] is not None
    assert "sent" not in {s for s, _job, _r in got.values()}


def test_a_batch_refused_whole_amid_open_sessions_is_split_and_each_attempt_counted_once(
    tmp_path: Path,
) -> None:
    sim = ESputnikSim()
    with Server(sim) as server:
        connector, store, opened, _clock = sessions(tmp_path, server, "open_sessions = 2\n")
        connector.config = replace(connector.config, batch_size=4)
        queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(12)])
        start = connector.start

        def refuse_the_second(batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
            if len(batch) == 4 and batch[0].key == "K00004":  # the second batch, whole
                sim.faults.add("status", status=400, count=1, path="/api/v1/contacts")
            return start(batch, on_job)

        connector.start = refuse_the_second  # type: ignore[method-assign]
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        attempts = {r["key"]: r["attempts"] for r in store.query("SELECT * FROM deliveries")}
        got = ledger(store)
        store.close()
    assert out.counts == {"sent": 12}
    assert {s for s, _job, _r in got.values()} == {"sent"}
    assert max(opened) == 2
    assert [len(r.json()["contacts"]) for r in sim.requests("/api/v1/contacts", "POST")] == [
        4,
        2,  # the refused batch's halves, the second one sent once the window had room
        2,
        4,
    ]
    assert posted(sim) == [f"K{i:05d}" for i in range(12)]
    # the refusal gave its attempt back; waiting for room marked nothing else in flight
    assert set(attempts.values()) == {1}


def test_checkpoints_aside_copy_committed_pages_from_their_own_thread(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    queue(store, "esputnik", [(esputnik.contact(i), "pending", None) for i in range(3)])
    ids = [r["id"] for r in store.query("SELECT id FROM deliveries")]

    def on_disk() -> set[str]:
        """The statuses the database file holds without its WAL."""
        copy = tmp_path / "copy.db"
        copy.write_bytes((tmp_path / "s.db").read_bytes())
        conn = sqlite3.connect(copy)
        try:
            return {r[0] for r in conn.execute("SELECT status FROM deliveries")}
        except sqlite3.DatabaseError:  # not even the tables yet, or copied mid-checkpoint
            return set()
        finally:
            conn.close()
            copy.unlink()

    assert on_disk() == set()  # all in the WAL yet
    with store.checkpoints_aside():
        assert store.scalar("PRAGMA wal_autocheckpoint") == 0  # no copying inside commits
        assert any(t.name == "syncd-checkpoint" for t in threading.enumerate())
        store.mark_in_flight(ids, NOW)
        deadline = time.monotonic() + 5
        while on_disk() != {"in_flight"} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert on_disk() == {"in_flight"}  # the thread copied the commit into the file
    assert store.scalar("PRAGMA wal_autocheckpoint") == 1000
    assert not any(t.name == "syncd-checkpoint" for t in threading.enumerate())
    store.close()


def test_a_commit_without_copy_back_leaves_the_wal_to_the_checkpoints_aside(
    tmp_path: Path,
) -> None:
    """The diff's commit (`write(copy_back=False)`), and the run's `delivering` note after
    it, copy none of its pages back into the file, however many (SQLite would past 1000);
    the delivery's `checkpoints_aside` copies
    them at once, without waiting for a commit of its own."""
    store = Store.open(tmp_path / "s.db")
    with store.write() as c:
        c.execute("CREATE TABLE big (x BLOB)")
    run_id = store.start_run("reconcile", datetime.now(UTC))
    store.scalar("PRAGMA wal_checkpoint(TRUNCATE)")  # the file holds the table, empty

    def on_disk() -> int:
        copy = tmp_path / "copy.db"
        copy.write_bytes((tmp_path / "s.db").read_bytes())
        conn = sqlite3.connect(copy)
        try:
            return int(conn.execute("SELECT count(*) FROM big").fetchone()[0])
        except sqlite3.DatabaseError:  # copied half-way through the thread's copying
            return -1
        finally:
            conn.close()
            copy.unlink()

    with store.write(copy_back=False) as c:
        c.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
            "INSERT INTO big SELECT randomblob(4000) FROM n"
        )
    assert on_disk() == 0  # 3000 pages, all still in the WAL
    # the reconcile's note between its diff and its delivery copies nothing back either
    # (it did: ~40 ms of a 200k second sync in the main thread)
    store.delivering(run_id, ["esputnik"])
    assert on_disk() == 0
    assert store.scalar("PRAGMA wal_autocheckpoint") == 1000  # later commits copy as usual
    with store.checkpoints_aside():
        deadline = time.monotonic() + 5
        while on_disk() != 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert on_disk() == 3000
    store.close()


def test_checkpoints_aside_without_a_second_connection_leave_sqlite_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "s.db")

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with store.checkpoints_aside():
        assert store.scalar("PRAGMA wal_autocheckpoint") == 1000
    monkeypatch.undo()
    store.close()


def test_a_batch_refused_whole_is_split_by_the_values_its_words_quote() -> None:
    """The contacts holding a value the refusal quotes, as a whole (not inside a longer
    word, three characters or more, any case), go first; quoting every contact or none,
    there is no such split (the batch is halved)."""

    def batch(*values: str) -> list[Contact]:
        return [Contact(key=f"K{i}", fields={"v": v}) for i, v in enumerate(values)]

    def keys(values: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
        parts = _quoted(batch(*values), words)
        return parts and ([c.key for c in parts[0]], [c.key for c in parts[1]])

    words = "Could not parse 'Sure Why Not' as Boolean; the respondent email a@b.be is invalid"
    assert keys(("x", "sure why not", "y", "A@B.BE")) == (["K1", "K3"], ["K0", "K2"])
    assert keys(("pars", "why", "oolean", "no")) == (["K1"], ["K0", "K2", "K3"])
    assert keys(("a", "b", "c")) is None
    assert keys(("why", "why")) is None


def test_syncd_retry_forget_jobs_from_the_command_line(tmp_path: Path) -> None:
    """End to end: a sync whose session never ends exits 1 saying so; the contact changes;
    the next sync holds the change back, naming the session; `syncd retry --forget-jobs`
    gives the session up and sends the change."""
    import os
    import subprocess
    import sys

    from syncd.sample import HEADER, rows
    from tests.helpers import World, esputnik_table

    data = list(rows(3))
    email = HEADER.index("Email")
    # the other sessions end at their first poll, however late a loaded machine makes it
    sim = ESputnikSim(polls_to_finish=1)
    sim.stall_import(data[1][email].strip().lower())
    with Server(sim) as server:
        w = World(
            tmp_path, {"esputnik": esputnik_table(server.url, poll_timeout=0.05, batch_size=1)}
        )
        cmd = [sys.executable, "-m", "syncd.cli", "--config", str(tmp_path / "syncd.toml")]
        env = {**os.environ, "SYNCD_LOG_LEVEL": "WARNING"}

        def syncd(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)

        w.write(data)
        first = syncd("sync")
        assert first.returncode == 1, first.stdout + first.stderr[-2000:]
        assert "1 held in a job still open" in first.stdout
        # the operator sees it in status, naming the session (not a request going on)
        shown = syncd("status").stdout
        assert "esputnik: 1 in_flight — import session" in shown, shown
        data[1][HEADER.index("First Name")] = "Changed"
        data[1][email] = "changed@example.com"  # a session of its own: not the one stalled
        w.write(data)
        second = syncd("sync")
        assert second.returncode == 1
        assert "held back: import session" in second.stdout  # the run's reasons name it
        assert posted(sim).count(data[1][0]) == 1
        retried = syncd("retry", "--vendor", "esputnik", "--forget-jobs")
        assert retried.returncode == 0, retried.stdout + retried.stderr[-2000:]
        assert "esputnik: forgot the open jobs of 1 deliveries" in retried.stdout
    assert esputnik.KIT.held(sim)[data[1][0]]["firstName"] == "Changed"
    assert {d["status"] for d in w.deliveries() if d["key"] == data[1][0]} == {
        "superseded",
        "sent",
    }
