"""The delivery loop reads pending deliveries a page at a time and writes the ledger a
statement per batch: its memory and its SQLite work do not grow with the backlog."""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from threading import Event

import pytest

from syncd import push
from syncd.errors import AuthError, FatalError
from syncd.push import Deliverer
from syncd.settings import DeliveryConfig, MappingConfig, VendorConfig
from syncd.state import Store
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PAGE = 100  # PAGE_ROWS in these tests: four batches of 25


class Fake(Connector):
    """An upsert vendor in-process: acknowledges every contact but those in `refuse`
    (a refused contact makes its whole batch refused, as a 4xx would)."""

    name = "fake"
    title = "Fake"
    kind = "upsert"
    max_batch = 25

    def __init__(
        self,
        *,
        refuse: frozenset[str] = frozenset(),
        stop: Event | None = None,
        stop_after: int | None = None,
        auth_fails_at: int | None = None,
    ) -> None:
        super().__init__(
            VendorConfig(
                name="fake",
                base_url="http://127.0.0.1:9",
                mapping=MappingConfig(path=Path("fake.toml"), fields={"firstName": "First"}),
                options={},
                delivery=DeliveryConfig(),
            )
        )
        self.refuse, self.stop, self.stop_after = refuse, stop, stop_after
        self.auth_fails_at = auth_fails_at
        self.calls = 0
        self.keep = True  # record what the vendor took (else only count it)
        self.acked: list[tuple[str, str]] = []  # (key, version) the vendor took

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        assert self.http.on_write is not None
        self.http.on_write()  # the request's first byte goes
        self.calls += 1
        if self.calls == self.auth_fails_at:
            raise AuthError("token revoked", vendor=self.name)
        refused = [c.key for c in batch if c.key in self.refuse]
        if refused:
            raise FatalError(f"bad contact {refused[0]}", vendor=self.name)
        if self.keep:
            self.acked += [(c.key, c.fields["firstName"]) for c in batch]
        if self.stop is not None and self.calls == self.stop_after:
            self.stop.set()  # SIGTERM while this batch was out
        return [Result(c.key, Status.SENT, ref=f"ref-{c.key}") for c in batch]


def queue(store: Store, versions: Sequence[tuple[str, str]]) -> None:
    """Pending deliveries of (key, version), in this order (so in id order)."""
    run = store.start_run("test", NOW)
    ts = NOW.isoformat()
    with store.write() as c:
        c.executemany(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "created_at, updated_at) VALUES (?, 'fake', ?, 'changed', 'pending', ?, ?, ?, ?)",
            [
                (run, key, v, json.dumps({"fields": {"firstName": v}, "metadata": {}}), ts, ts)
                for key, v in versions
            ],
        )


def backlog(n: int) -> list[tuple[str, str]]:
    """`n` contacts, a fifth of them edited again after the whole first version was queued
    (their two deliveries pages apart), and a few edited twice in a row (the same page)."""
    rows = [(f"K{i:05d}", "v1") for i in range(n)]
    rows += [(f"K{i:05d}", "v2") for i in range(0, n, 5)]
    for i in range(n, n + 10):
        rows += [(f"K{i:05d}", "v1"), (f"K{i:05d}", "v2")]
    return rows


def newest(rows: Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(rows)  # later rows win


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(push, "PAGE_ROWS", PAGE)
    return Store.open(tmp_path / "s.db")


def spy_pages(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every call of `store.pending`: (after, limit, rows handed out)."""
    calls: list[tuple[int, int, int]] = []
    real = store.pending

    def pending(vendor: str, after: int, limit: int) -> list[sqlite3.Row]:
        rows = real(vendor, after, limit)
        calls.append((after, limit, len(rows)))
        return rows

    monkeypatch.setattr(store, "pending", pending)
    return calls


def ledger(store: Store) -> dict[str, list[tuple[str, str]]]:
    """Each key's deliveries in id order: (version, status)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in store.query("SELECT key, hash, status FROM deliveries ORDER BY id"):
        out.setdefault(r["key"], []).append((r["hash"], r["status"]))
    return out


def test_every_contact_is_sent_once_with_its_newest_version_a_page_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = backlog(3000)
    queue(store, rows)
    pages = spy_pages(store, monkeypatch)
    progress: list[int] = []
    connector = Fake()
    out = Deliverer(
        store, connector, lambda: NOW, max_attempts=3, progress=lambda v, n: progress.append(n)
    ).run()

    want = newest(rows)
    assert sorted(connector.acked) == sorted(want.items())  # each once, the newest version
    assert out.counts == {"sent": len(want), "superseded": len(rows) - len(want)}
    for key, deliveries in ledger(store).items():  # every older version superseded
        assert deliveries[-1] == (want[key], "sent")
        assert all(status == "superseded" for _, status in deliveries[:-1])
    state = store.query("SELECT key, hash, ref FROM vendor_state")
    assert {r["key"]: (r["hash"], r["ref"]) for r in state} == {
        k: (v, f"ref-{k}") for k, v in want.items()
    }
    # never more than a page in memory; the cursor only moves on
    assert {limit for _, limit, _ in pages} == {PAGE}
    assert max(n for *_, n in pages) == PAGE
    assert len(pages) == -(-len(rows) // PAGE)
    afters = [after for after, *_ in pages]
    assert afters == sorted(set(afters))
    # sent contacts, batch by batch (a page's last batch is short by its superseded rows)
    steps = [b - a for a, b in zip([0, *progress], progress, strict=False)]
    assert progress[-1] == len(want) and all(0 < step <= 25 for step in steps)
    assert len(progress) == connector.calls


def test_a_page_is_whole_batches_of_at_least_page_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(store, [(f"K{i:05d}", "v1") for i in range(500)])
    pages = spy_pages(store, monkeypatch)
    connector = Fake()
    connector.config = VendorConfig(**{**vars(connector.config), "batch_size": 30})
    Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
    assert {limit for _, limit, _ in pages} == {120}  # 100 rounded up to batches of 30
    assert [n for *_, n in pages] == [120, 120, 120, 120, 20]
    assert len(connector.acked) == 500


def test_the_delivery_loop_holds_as_much_memory_for_5000_pending_as_for_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "PAGE_ROWS", PAGE)

    def peak(n: int) -> int:
        store = Store.open(tmp_path / f"{n}.db")
        queue(store, [(f"K{i:05d}", "v1" * 50) for i in range(n)])
        connector = Fake()
        connector.keep = False
        tracemalloc.start()
        Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        store.close()
        return top

    peak(500)  # warm: first-call caches (structlog, SQLite's statement cache)
    small, large = peak(500), peak(5000)
    assert large < small * 1.5, (small, large)  # all at once it was ten times


def test_a_stop_between_batches_leaves_the_rest_pending_and_the_next_run_sends_it(
    store: Store,
) -> None:
    rows = backlog(1000)
    queue(store, rows)
    stop = Event()
    first = Fake(stop=stop, stop_after=7)  # mid-way through the second page
    out = Deliverer(store, first, lambda: NOW, max_attempts=3, stop=stop).run()
    assert first.calls == 7  # none after the stop
    assert out.counts["sent"] == len(first.acked) > 6 * 20
    sent = dict(first.acked)
    for key, deliveries in ledger(store).items():
        if key in sent:
            assert deliveries[-1] == (sent[key], "sent")
        else:  # the newest is still to be sent; an older one may be superseded already
            assert deliveries[-1][1] == "pending"
    # pending: the newest of every contact not sent, and older ones on pages not yet read
    superseded = out.counts["superseded"]
    assert store.backlog()["fake"] == {"pending": len(rows) - len(sent) - superseded}

    again = Fake()
    Deliverer(store, again, lambda: NOW, max_attempts=3).run()
    assert not set(sent) & {k for k, _ in again.acked}  # nothing twice
    assert sorted(first.acked + again.acked) == sorted(newest(rows).items())
    assert "fake" not in store.backlog()


def test_a_refused_batch_is_split_and_a_stopped_vendor_leaves_the_rest_pending(
    store: Store,
) -> None:
    queue(store, [(f"K{i:05d}", "v1") for i in range(400)])
    # batch 6 (K00125-K00149) is refused whole, then halved down to K00130 in 9 more
    # calls (6-14); calls 15-19 send the rest of it and batches 7-9; call 20 (batch 10,
    # K00225-K00249, on the third page) meets a revoked token
    connector = Fake(refuse=frozenset({"K00130"}), auth_fails_at=20)
    out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
    status = {
        r["key"]: (r["status"], r["attempts"])
        for r in store.query("SELECT key, status, attempts FROM deliveries")
    }
    assert out.stopped is not None and "token revoked" in out.stopped
    assert out.counts == {"sent": 224, "failed": 1, "pending": 25}
    assert status.pop("K00130") == ("failed", 1)
    acked = [k for k, _ in connector.acked]
    assert sorted(acked) == [f"K{i:05d}" for i in range(225) if i != 130]
    assert {k for k, s in status.items() if s == ("sent", 1)} == set(acked)
    assert {k for k, s in status.items() if s == ("pending", 0)} == {
        f"K{i:05d}" for i in range(225, 400)
    }


def statements(store: Store) -> list[str]:
    traced: list[str] = []
    store.conn.set_trace_callback(traced.append)
    return traced


def test_the_ledger_is_written_a_statement_per_batch_never_a_row(store: Store) -> None:
    rows = backlog(1000)
    queue(store, rows)
    traced = statements(store)
    connector = Fake()
    Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
    store.conn.set_trace_callback(None)
    writes = [s for s in traced if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    pages = -(-len(rows) // PAGE)
    # per batch: in flight, sent, vendor_state; per page with older versions: superseded
    assert connector.calls < len(rows) / 20
    assert len(writes) <= 3 * connector.calls + pages, len(writes)


def test_no_statement_of_the_delivery_loop_walks_the_ledger(store: Store) -> None:
    """Each read and write reaches deliveries through an index or by id: the page is a
    range of `deliveries_open`, a newer version is looked up in `deliveries_key`."""
    queue(store, backlog(300))
    with store.write() as c:  # a ledger of other vendors and closed work to walk past
        c.execute(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "created_at, updated_at) SELECT run_id, 'other', key, kind, 'sent', hash, "
            "payload, created_at, updated_at FROM deliveries"
        )
    traced = statements(store)
    Deliverer(store, Fake(), lambda: NOW, max_attempts=3).run()
    store.conn.set_trace_callback(None)
    plans: dict[str, list[str]] = {}
    for sql in traced:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT")):
            plan = store.query(f"EXPLAIN QUERY PLAN {sql}")
            plans[sql] = [r["detail"] for r in plan]
    pending = [p for s, p in plans.items() if "status = 'pending'" in s and "LIMIT" in s]
    assert pending, "no page was read"
    for plan in pending:
        assert any(
            "deliveries_open (vendor=? AND status=? AND rowid>?)" in line for line in plan
        ), plan
        assert any("deliveries_key (key=? AND vendor=? AND rowid>?)" in line for line in plan)
        assert not any("TEMP B-TREE" in line for line in plan), plan  # id order: the index's
    for sql, plan in plans.items():
        scans = [line for line in plan if line.startswith("SCAN") and "json_each" not in line]
        assert not scans, (sql, plan)
