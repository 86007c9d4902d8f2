"""The reconcile pipeline's promises, through `syncd.pipeline.reconcile` and the in-memory
vendor (tests/memory.py): each test reads the ledger (deliveries, vendor_state) and what the
vendor was sent. No socket, no simulator: the whole file runs in a few seconds.

Also: every run closes the connectors it built (reconcile, retry, pull, the daemon's jobs,
`syncd check --online`), and the fingerprint cache holds across diffs of every kind."""

from __future__ import annotations

import io
import json
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from syncd import log as logmod
from syncd.cli import cli
from syncd.clock import SystemClock
from syncd.daemon import Daemon
from syncd.errors import GuardError, RetriableError, StopRequested, StoreError
from syncd.pipeline import deliver, opened
from syncd.pull import pull
from syncd.sample import row, rows
from syncd.vendors.base import Page, Status
from tests.helpers import assert_fingerprint_cache_holds
from tests.memory import MemoryWorld, Remote, memory_vendors


@pytest.fixture
def remotes() -> Iterator[dict[str, Remote]]:
    with memory_vendors(mem="upsert", survey="trigger") as found:
        yield found


def world_of(
    tmp_path: Path, remotes: dict[str, Remote], *only: str, **table: object
) -> MemoryWorld:
    return MemoryWorld(tmp_path, {n: remotes[n] for n in only or remotes}, **table)


def keys(n: int, start: int = 0) -> list[str]:
    return [f"CRM-{i:07d}" for i in range(start, start + n)]


def runs(world: MemoryWorld) -> list[tuple[str, str, int]]:
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        return conn.execute("SELECT kind, status, exit_code FROM runs ORDER BY id").fetchall()


def test_new_contacts_are_sent_and_acknowledged(tmp_path: Path, remotes: dict[str, Remote]) -> None:
    world = world_of(tmp_path, remotes, "mem")
    world.write(list(rows(5)))
    report = world.sync()
    assert report.exit_code == 0, report.summary()
    assert "mem: 5 new, 5 sent" in report.summary()
    assert sorted(remotes["mem"].keys()) == keys(5)
    assert remotes["mem"].batches[0][0].fields["email"].startswith("  ") is False  # normalised
    assert world.ledger("mem") == dict.fromkeys(keys(5), "sent")
    assert sorted(world.acknowledged("mem")) == keys(5)
    assert runs(world) == [("reconcile", "ok", 0)]


def test_an_edit_reverted_after_the_vendor_took_it_unacknowledged_is_undone(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The vendor takes a change but its answer is lost (pending, the vendor holds the new
    data); the CRM edit is then reverted to what the vendor acknowledged before. The old
    data goes again: the pending delivery must not be dropped as "already there"."""
    world = world_of(tmp_path, remotes, "mem")
    data = list(rows(3))
    world.write(data)
    world.sync()
    edited = list(data)
    edited[1] = row(1, random.Random(0), version=1)  # another city
    remotes["mem"].script[keys(3)[1]] = RetriableError("the answer was lost", vendor="mem")
    world.write(edited)
    assert world.sync().exit_code == 1
    assert world.ledger("mem")[keys(3)[1]] == "pending"
    held = {c.key: c.fields["city"] for b in remotes["mem"].batches for c in b}
    assert held[keys(3)[1]] != remotes["mem"].batches[0][1].fields["city"]  # it has the edit

    del remotes["mem"].script[keys(3)[1]]
    world.write(data)  # the edit reverted
    assert world.sync().exit_code == 0
    held = {c.key: c.fields["city"] for b in remotes["mem"].batches for c in b}
    first = {c.key: c.fields["city"] for c in remotes["mem"].batches[0]}
    assert held == first  # the vendor holds the export again
    assert world.ledger("mem")[keys(3)[1]] == "sent"


def test_a_contact_the_answer_says_nothing_of_is_unknown_at_a_trigger_pending_at_an_upsert(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """A connector's results leave a contact out: the request carried it, so a trigger
    vendor may have surveyed it. Re-sending it on our own (pending) risked a second survey."""
    world = world_of(tmp_path, remotes)
    world.write(list(rows(3)))
    for name in ("mem", "survey"):
        remotes[name].script[keys(3)[1]] = None  # type: ignore[assignment]  # left out
    world.sync()
    assert world.ledger("survey")[keys(3)[1]] == "unknown"
    assert world.ledger("mem")[keys(3)[1]] == "pending"


def test_an_unchanged_export_sends_nothing(tmp_path: Path, remotes: dict[str, Remote]) -> None:
    world = world_of(tmp_path, remotes, "mem")
    world.write(list(rows(5)))
    world.sync()
    before, acked = len(world.deliveries()), world.acknowledged("mem")
    report = world.sync()
    assert report.exit_code == 0
    assert len(remotes["mem"].batches) == 1
    assert len(world.deliveries()) == before
    assert world.acknowledged("mem") == acked
    assert "mem: nothing to send" in report.summary()


def test_a_changed_contact_is_sent_once(tmp_path: Path, remotes: dict[str, Remote]) -> None:
    world = world_of(tmp_path, remotes, "mem")
    data = list(rows(6))
    world.write(data)
    world.sync()
    acked = world.acknowledged("mem")
    rng = random.Random(0)
    for i in (1, 4):
        data[i] = row(i, rng, version=1)  # another city: a mapped column
    world.write(data)
    assert world.sync().exit_code == 0
    assert world.sync().exit_code == 0  # and not again
    changed = [keys(6)[1], keys(6)[4]]
    assert [len(b) for b in remotes["mem"].batches] == [6, 2]
    assert sorted(c.key for c in remotes["mem"].batches[1]) == changed
    assert {c.fields["city"] for c in remotes["mem"].batches[1]} != {
        c.fields["city"] for c in remotes["mem"].batches[0] if c.key in changed
    }
    now = world.acknowledged("mem")
    assert sorted(k for k in now if now[k] != acked[k]) == changed
    sent = [(d["key"], d["status"]) for d in world.deliveries()]
    assert sorted(sent) == sorted([(k, "sent") for k in keys(6)] + [(k, "sent") for k in changed])


def test_a_refused_contact_fails_then_goes_dead_after_max_attempts(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = world_of(tmp_path, remotes, "mem", max_attempts=2)
    victim = keys(3)[0]
    remotes["mem"].script[victim] = Status.FAILED
    world.write(list(rows(3)))
    assert world.sync().exit_code == 1
    assert world.ledger("mem")[victim] == "failed"
    assert world.sync().exit_code == 1  # re-queued and refused again: its last attempt
    assert world.ledger("mem")[victim] == "dead"
    third = world.sync()
    assert third.exit_code == 0  # dead waits for an operator; it does not fail every run
    assert remotes["mem"].keys().count(victim) == 2
    assert victim not in world.acknowledged("mem")
    assert sorted(world.acknowledged("mem")) == keys(3)[1:]
    reason = next(d["reason"] for d in world.deliveries() if d["key"] == victim)
    assert reason == "scripted failed"


def test_an_unknown_trigger_outcome_stops_the_vendor(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = world_of(tmp_path, remotes, "survey", batch_size=2)
    k = keys(6)
    remotes["survey"].script[k[2]] = Status.UNKNOWN  # in the second batch
    world.write(list(rows(6)))
    report = world.sync()
    assert report.exit_code == 1
    assert "survey: " in report.summary() and "(stopped)" in report.summary()
    assert "unknown" in report.stops()["survey"]
    assert [[c.key for c in b] for b in remotes["survey"].batches] == [k[0:2], k[2:4]]
    assert world.ledger("survey") == {
        k[0]: "sent",
        k[1]: "sent",
        k[2]: "unknown",
        k[3]: "sent",
        k[4]: "pending",
        k[5]: "pending",
    }
    assert sorted(world.acknowledged("survey")) == [k[0], k[1], k[3]]
    del remotes["survey"].script[k[2]]
    assert world.sync().exit_code == 0
    assert [c.key for c in remotes["survey"].batches[-1]] == k[4:6]  # never the unknown one
    assert world.ledger("survey")[k[2]] == "unknown"


def logging_to(stream: io.StringIO) -> None:
    logmod.configure(level="INFO", json=True, stream=stream)  # the `_logging` fixture resets it


def events(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in lines if e["event"] == event]


@pytest.mark.parametrize(
    ("first", "second", "settled"),
    [("mem", "survey", "pending"), ("survey", "mem", "unknown")],
)
def test_a_bug_in_one_vendors_delivery_fails_that_vendor_alone(
    tmp_path: Path, remotes: dict[str, Remote], first: str, second: str, settled: str
) -> None:
    """A connector that raises what no vendor error is (a KeyError reading an answer it
    did not expect) ended the whole run: every vendor after it got nothing, at every run,
    until the connector was fixed. Now that vendor is stopped for the run, as a vendor that
    refuses everything is: nothing it did not acknowledge is `sent` (the batch that went
    out and got no answer is settled as a restart would: an upsert's pending, a trigger's
    unknown), the error and its traceback are logged, the run says so (exit 1), and the
    next vendor is delivered."""
    world = world_of(tmp_path, remotes, first, second, batch_size=2)
    k = keys(7)
    remotes[first].script[k[4]] = KeyError("contactId")  # the third batch: two were taken
    world.write(list(rows(7)))
    logging_to(stream := io.StringIO())
    report = world.sync()

    assert report.exit_code == 1, report.summary()
    assert runs(world) == [("reconcile", "partial", 1)]
    assert len(remotes[first].batches) == 3
    assert world.ledger(first) == {
        **dict.fromkeys(k[:4], "sent"),
        **dict.fromkeys(k[4:6], settled),  # the batch that went out and got no answer
        k[6]: "pending",  # never sent
    }
    assert sorted(world.acknowledged(first)) == k[:4]
    assert sorted(remotes[second].keys()) == k  # delivered all the same
    assert world.ledger(second) == dict.fromkeys(k, "sent")
    why = report.stops()[first]
    assert why.startswith(f"{first}: stopped by an error syncd did not expect (KeyError: ")
    assert "contactId" in why
    assert f"{first}: 7 new, 4 sent" in report.summary()
    assert "(stopped)" in report.summary() and list(report.stops()) == [first]
    assert report.details()[0] == f"  {first}: stopped — {why}"
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        counts, message = conn.execute("SELECT counts, message FROM runs").fetchone()
    assert json.loads(counts)[first]["stopped"] == why
    assert json.loads(counts)[first][settled] == 2
    assert f"{first}: " in message and "(stopped)" in message
    (said,) = events(stream, "vendor stopped for this run")
    assert said["vendor"] == first and said["level"] == "error" and said["error"] == why
    assert "Traceback" in said["exception"] and "KeyError: 'contactId'" in said["exception"]

    del remotes[first].script[k[4]]
    again = world.sync()
    assert again.exit_code == 0, again.summary()
    sent = remotes[first].keys()[6:]  # what the next run sent
    if settled == "pending":  # an upsert's unanswered batch goes again, once
        assert sent == k[4:7]
        assert world.ledger(first) == dict.fromkeys(k, "sent")
    else:  # a trigger the vendor may have is never sent again unasked
        assert sent == [k[6]]
        assert world.ledger(first) == {
            **dict.fromkeys(k[:4], "sent"),
            **dict.fromkeys(k[4:6], "unknown"),
            k[6]: "sent",
        }
    assert len(remotes[second].keys()) == 7  # nothing sent twice


def test_a_bug_in_one_vendors_retry_fails_that_vendor_alone(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """`syncd retry` delivers through the same loop: a connector's bug stops its vendor,
    and the vendors after it are retried in the same run."""
    world = world_of(tmp_path, remotes, "mem", "survey")
    cfg = world.cfg
    k = keys(3)
    remotes["mem"].script[k[1]] = remotes["survey"].script[k[1]] = Status.FAILED
    world.write(list(rows(3)))
    assert world.sync().exit_code == 1
    remotes["mem"].script[k[1]] = AttributeError("'NoneType' object has no attribute 'get'")
    del remotes["survey"].script[k[1]]
    with opened(cfg) as store:
        report = deliver(cfg, store, world.clock, ["failed"])
    assert report.exit_code == 1, report.summary()
    assert "AttributeError" in report.stops()["mem"] and list(report.stops()) == ["mem"]
    assert runs(world)[-1] == ("retry", "partial", 1)
    assert world.ledger("mem")[k[1]] == "pending"  # sent, unanswered: an upsert goes again
    assert world.ledger("survey")[k[1]] == "sent"
    assert remotes["survey"].keys().count(k[1]) == 2
    del remotes["mem"].script[k[1]]
    assert world.sync().exit_code == 0
    assert world.ledger("mem") == dict.fromkeys(k, "sent")
    assert remotes["mem"].keys().count(k[1]) == 3  # refused, unanswered, then taken


def test_a_bug_in_one_vendors_delivery_fails_it_alone_in_the_daemons_reconcile(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = world_of(tmp_path, remotes, "mem", "survey")
    k = keys(4)
    world.write(list(rows(2)))
    assert world.sync().exit_code == 0  # the store the service's start sets up
    remotes["mem"].script[k[2]] = ValueError("Expecting value: line 1 column 1 (char 0)")
    world.write(list(rows(4)))
    Daemon(world.folder / "syncd.toml", SystemClock()).reconcile_job()
    assert runs(world)[-1] == ("reconcile", "partial", 1)
    assert world.ledger("mem") == {
        **dict.fromkeys(k[:2], "sent"),
        **dict.fromkeys(k[2:], "pending"),
    }
    assert world.ledger("survey") == dict.fromkeys(k, "sent")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (StoreError("the store's disk is full"), "failed", 2),
        (sqlite3.OperationalError("no such column: nope"), "failed", 1),
        (StopRequested("SIGTERM"), "interrupted", 0),
        (KeyboardInterrupt(), "interrupted", 130),
        (SystemExit(3), "failed", 1),
        (GuardError("refused"), "refused", 3),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_the_store_failing_or_a_stop_inside_one_vendor_still_ends_the_run(
    tmp_path: Path, remotes: dict[str, Remote], exc: BaseException, status: str, code: int
) -> None:
    """What every vendor would meet (the store failing) or what asks syncd to stop is not
    one vendor's failure: the run ends there, recorded, its in-flight rows settled, and no
    later vendor is sent anything."""
    world = world_of(tmp_path, remotes, "mem", "survey", batch_size=2)
    k = keys(5)
    remotes["mem"].script[k[2]] = exc  # the second batch
    world.write(list(rows(5)))
    with pytest.raises(type(exc)):
        world.sync()
    assert runs(world) == [("reconcile", status, code)]
    assert remotes["survey"].batches == []  # never reached
    assert world.ledger("mem") == {
        **dict.fromkeys(k[:2], "sent"),
        **dict.fromkeys(k[2:], "pending"),
    }
    assert world.ledger("survey") == dict.fromkeys(k, "pending")


def test_a_dry_run_writes_nothing(tmp_path: Path, remotes: dict[str, Remote]) -> None:
    world = world_of(tmp_path, remotes)
    world.write(list(rows(4)))
    report = world.sync(dry_run=True)
    assert report.plan is not None
    assert report.plan.vendors["mem"].counts["new"] == 4
    assert report.plan.vendors["survey"].counts["new"] == 4
    assert remotes["mem"].batches == remotes["survey"].batches == []
    store = world.store()
    try:
        for table in ("deliveries", "vendor_state", "runs", "contacts", "quarantine"):
            assert store.scalar(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        store.close()


# --- every run closes its connectors ----------------------------------------------------


def test_every_run_closes_the_connectors_it_built(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = world_of(tmp_path, remotes)
    config = world.folder / "syncd.toml"
    cfg = world.cfg
    world.write(list(rows(4)))
    remotes["mem"].script[keys(4)[0]] = Status.FAILED

    def all_closed(after: str) -> None:
        for name, remote in remotes.items():
            assert remote.built and remote.open == 0, (after, name, remote.built, remote.closed)

    world.sync()
    all_closed("reconcile")
    world.sync(dry_run=True)
    all_closed("dry run")
    with opened(cfg) as store:
        deliver(cfg, store, world.clock, ["failed"])
    all_closed("retry")
    with opened(cfg) as store:
        pull(cfg, store, world.clock)
    all_closed("pull")
    remotes["mem"].script[keys(4)[0]] = StoreError("the store's disk is full")
    with opened(cfg) as store, pytest.raises(StoreError):
        deliver(cfg, store, world.clock, ["failed"])
    all_closed("a retry that raised")

    daemon = Daemon(config, SystemClock())
    built = remotes["mem"].built
    daemon.reconcile_job()
    daemon.pull_job()
    assert remotes["mem"].built == built + 2
    all_closed("the daemon's jobs")

    result = CliRunner().invoke(cli, ["--config", str(config), "check", "--online"])
    assert result.exit_code == 0, result.output
    assert "mem: not checked online" in result.output
    all_closed("check --online")


# --- pull's report ------------------------------------------------------------------------


def test_a_pull_reports_per_stream_and_records_its_counts(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    world = world_of(tmp_path, remotes, "mem", "survey")
    cfg = world.cfg
    with opened(cfg) as store:
        empty = pull(cfg, store, world.clock)
    assert empty.exit_code == 0
    assert "mem: no new responses or unsubscribes" in empty.summary(), empty.summary()
    assert empty.vendors["mem"].read == ["responses", "unsubscribes"]

    remotes["mem"].pages["unsubscribes"] = [
        Page([{"vendor_id": "u1", "email": "A@example.com"}, {"vendor_id": {"x": 1}}], "c1")
    ]
    remotes["survey"].pages["responses"] = RetriableError("vendor down")
    with opened(cfg) as store:
        report = pull(cfg, store, world.clock)
        row_ = store.query("SELECT status, exit_code, counts FROM runs ORDER BY id DESC")[0]
        cursor = store.scalar("SELECT cursor FROM cursors WHERE vendor = 'mem'")
    assert report.exit_code == 1
    assert (row_["status"], row_["exit_code"]) == ("partial", 1)
    assert json.loads(row_["counts"]) == {
        "mem": {"unsubscribes": 1, "invalid": 1},
        "survey": {"errors": 1, "stopped": "responses: vendor down"},
    }
    assert report.vendors["survey"].errors == {"responses": "vendor down"}
    assert report.vendors["survey"].read == ["unsubscribes"]
    line = report.summary()
    assert "mem: 1 unsubscribes, 1 records skipped" in line, line
    assert "survey: 1 streams failed (stopped)" in line, line
    assert report.details() == ["  survey: stopped — responses: vendor down"]
    assert cursor == "c1"


def test_a_stream_whose_answer_syncd_cannot_read_fails_alone(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """A connector that raises something no vendor error is (a TypeError on an answer it
    did not expect: four such were found in Hello Customer's and SignalVine's readers)
    stopped the whole pull, every later stream and vendor unread, at every pull. Now that
    stream fails, saying what was raised, its page not stored and its cursor kept; the
    others are read."""
    world = world_of(tmp_path, remotes, "survey", "mem")
    cfg = world.cfg
    remotes["survey"].pages["responses"] = TypeError("'int' object is not iterable")
    remotes["mem"].pages["unsubscribes"] = [Page([{"vendor_id": "u1"}], "c1")]
    with opened(cfg) as store:
        report = pull(cfg, store, world.clock)
        cursors = [tuple(r) for r in store.query("SELECT vendor, stream, cursor FROM cursors")]
    assert report.exit_code == 1, report.summary()
    why = report.vendors["survey"].errors["responses"]
    assert why.startswith("survey: could not read its answer (TypeError: 'int' object is not")
    assert report.vendors["survey"].read == ["unsubscribes"]
    assert report.vendors["mem"].counts["unsubscribes"] == 1
    assert cursors == [("mem", "unsubscribes", "c1")]


# --- the fingerprint cache ----------------------------------------------------------------


def test_the_fingerprint_cache_holds_across_every_kind_of_diff(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The cache is the live contacts' fingerprints and rowids after each diff: new rows,
    changed ones, gone ones, revived ones, a row twice, a contact deleted by hand, and rowids
    renumbered (as a VACUUM may) under a cache that claims to be current."""
    world = world_of(tmp_path, remotes, "mem")
    rng = random.Random(1)
    data = list(rows(40))

    def diff(export: list[list[str]], unchanged: int) -> None:
        world.write(export)
        report = world.sync()
        assert report.plan is not None and report.plan.unchanged == unchanged, report.summary()
        with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
            assert_fingerprint_cache_holds(conn)
            assert conn.execute("SELECT count(*) FROM fingerprint_cache").fetchone() == (1,)

    diff(data, 0)  # all new
    data[3] = row(3, rng, version=1)
    diff(data, 39)  # one changed
    diff(data[:37], 37)  # three gone (under the guard's max_drop)
    diff(data, 37)  # and back
    diff([*data, data[7]], 40)  # a row twice: the second is quarantined
    store = world.store()
    try:
        with store.write() as c:  # an operator forgets a contact: a gap in the rowids
            c.execute("DELETE FROM contacts WHERE key = ?", (data[0][0],))
    finally:
        store.close()
    diff(data[1:], 39)  # the cache is written again, over the gap
    store = world.store()
    try:
        # what a VACUUM renumbering the rowids does, as far as the cache can tell: no
        # trigger fires, so the cache still claims to be current, naming the wrong rows
        with store.write() as c:
            c.execute("UPDATE contacts SET rowid = rowid + 1000")
        with pytest.raises(AssertionError):
            assert_fingerprint_cache_holds(store.conn)
    finally:
        store.close()
    data[9] = row(9, rng, version=2)
    # a gone contact finds the renumbering out, the change still reaches its own contact,
    # and the cache is written right again
    diff([*data[1:20], *data[21:]], 37)
    assert [c.key for c in remotes["mem"].batches[-1]] == [data[9][0]]
    diff([*data[1:20], *data[21:]], 38)


def test_a_connector_opens_no_http_client_until_it_sends(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """What the diff reads of a connector (its facts, `value_kinds`, `shape`) needs no HTTP
    session: one is made at the first request, and `close` makes none."""
    from syncd.clock import SYSTEM
    from syncd.vendors import REGISTRY
    from syncd.vendors.base import Contact

    world = world_of(tmp_path, remotes, "mem")
    connector = REGISTRY["mem"](world.cfg.vendors["mem"], clock=SYSTEM)
    assert connector.value_kinds() == connector.field_types
    assert connector.shape(Contact("k", {"email": "a@b.be"})) == Contact("k", {"email": "a@b.be"})
    assert "http" not in vars(connector)
    connector.close()
    assert "http" not in vars(connector)
    assert connector.http is connector.http  # made once, at first use
    connector.close()


def test_async_jobs_overlap_within_the_window_and_each_batch_goes_once(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    remotes["mem"].polls, remotes["mem"].window = 2, 3
    world = world_of(tmp_path, remotes, "mem", batch_size=2)
    world.write(list(rows(11)))
    report = world.sync()
    assert report.exit_code == 0, report.summary()
    assert sorted(remotes["mem"].keys()) == keys(11)  # each batch went once
    assert remotes["mem"].most_open == 3  # the window, never more
    assert remotes["mem"].open_jobs == 0
    assert world.ledger("mem") == dict.fromkeys(keys(11), "sent")
    assert sorted(world.acknowledged("mem")) == keys(11)


def test_an_exception_with_jobs_open_leaves_them_in_flight_and_the_next_run_polls_them(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The open jobs carry their batches: in flight with the job recorded, never re-sent;
    the batch whose request got no answer goes back to pending (abandon), the rest wait."""
    remote = remotes["mem"]
    remote.polls, remote.window = 3, 3
    world = world_of(tmp_path, remotes, "mem", batch_size=2)
    k = keys(9)
    remote.script[k[6]] = TypeError("a bug reading the answer")  # the fourth batch
    world.write(list(rows(9)))
    failed = world.sync()
    assert failed.exit_code == 1 and "TypeError" in failed.stops()["mem"], failed.summary()
    assert len(remote.batches) == 4
    rows_now = {d["key"]: (d["status"], d["job"]) for d in world.deliveries()}
    open_jobs = {job for status, job in rows_now.values() if status == "in_flight"}
    assert all(job is not None for job in open_jobs)
    assert len(open_jobs) == remote.open_jobs >= 2  # several jobs were open at once
    assert {rows_now[key][0] for key in k[6:]} == {"pending"}
    del remote.script[k[6]]
    report = world.sync()
    assert report.exit_code == 0, report.summary()
    assert remote.open_jobs == 0  # every open job was polled to its end
    sent = remote.keys()
    assert sorted(sent) == sorted([*k, k[6], k[7]])  # only the unanswered batch went twice
    assert world.ledger("mem") == dict.fromkeys(k, "sent")
