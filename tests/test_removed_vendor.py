"""A vendor removed from the config leaves its open deliveries (pending, failed, unknown,
...) in the store. `syncd status` shows them apart, with the command that closes them, and
they are no operator's problem: not in `attention` or `problems`, not in the
`syncd_deliveries` gauges its alert reads. `syncd withdraw --vendor V` closes them
(`superseded`, "vendor removed from the config") and keeps the rest: the rows, and what the
vendor acknowledged, so that added back it is compared with that as ever. In process, with
the in-memory vendors."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd.cli import main
from syncd.config import load
from syncd.daemon import unbaselined
from syncd.lock import InstanceLock
from syncd.metrics import StoreCollector
from syncd.sample import row, rows
from syncd.state import Store
from syncd.status import collect, render
from syncd.vendors.base import Status
from tests.memory import MemoryWorld, Remote, memory_vendors

REASON = "vendor removed from the config"
# what syncd status counts of an open delivery, in its order
NONE_OPEN = {"pending": 0, "in_flight": 0, "failed": 0, "unknown": 0, "dead": 0}


@pytest.fixture
def remotes() -> Iterator[dict[str, Remote]]:
    with memory_vendors(mem="upsert", shop="upsert", survey="trigger") as found:
        yield found


def configure(folder: Path, remotes: dict[str, Remote], *names: str) -> MemoryWorld:
    return MemoryWorld(folder, {name: remotes[name] for name in names}, batch_size=2)


@pytest.fixture
def removed(tmp_path: Path, remotes: dict[str, Remote]) -> MemoryWorld:
    """Six contacts sent to mem, shop and survey, then shop and survey removed from the
    config with deliveries open: shop 1 failed (CRM-0000001); survey 1 failed
    (CRM-0000001), 1 unknown (CRM-0000002: the vendor is stopped for the run) and 2 pending
    (CRM-0000004, CRM-0000005), having acknowledged CRM-0000000 and CRM-0000003."""
    world = configure(tmp_path, remotes, "mem", "shop", "survey")
    world.write(list(rows(6)))
    remotes["shop"].script["CRM-0000001"] = Status.FAILED
    remotes["survey"].script["CRM-0000001"] = Status.FAILED
    remotes["survey"].script["CRM-0000002"] = Status.UNKNOWN
    assert world.sync().exit_code == 1
    remotes["shop"].script.clear()
    remotes["survey"].script.clear()
    return configure(tmp_path, remotes, "mem")


def syncd(monkeypatch: pytest.MonkeyPatch, world: Any, *args: str) -> tuple[int, str, str]:
    """`syncd --config … ARGS` in process: (exit status, stdout, stderr). Its output goes to
    streams of its own, never closed: the command points the logs at its stderr."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "argv", ["syncd", "--config", str(world.folder / "syncd.toml"), *args])
    code: Any = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    finally:
        monkeypatch.undo()
    return int(code or 0), out.getvalue(), err.getvalue()


def ledger(world: MemoryWorld) -> list[tuple[str, str, str, str | None]]:
    return [(d["vendor"], d["key"], d["status"], d["reason"]) for d in world.deliveries()]


def status_of(world: MemoryWorld) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(collect(world.cfg, datetime.now(UTC))))
    schema = json.loads(files("syncd").joinpath("status.schema.json").read_text("utf-8"))
    jsonschema.validate(data, schema)
    return data


# --- status and metrics -------------------------------------------------------------------


def test_status_shows_a_removed_vendors_open_deliveries_apart_as_nobodys_problem(
    removed: MemoryWorld,
) -> None:
    data = status_of(removed)
    assert data["vendors"] == {"mem": NONE_OPEN}
    assert data["removed_vendors"] == {
        "shop": {**NONE_OPEN, "failed": 1},
        "survey": {**NONE_OPEN, "pending": 2, "failed": 1, "unknown": 1},
    }
    # what a monitoring script alerts on: nothing waits for an operator
    assert data["attention"] == [] and data["problems"] == []
    text = render(data)
    assert "need an operator" not in text and "problems" not in text
    assert (
        "open deliveries of vendors no longer in the config (never sent unless the vendor is "
        "added back):\n"
        "  shop: 1 failed; `syncd withdraw --vendor shop` closes them\n"
        "  survey: 2 pending, 1 failed, 1 unknown; `syncd withdraw --vendor survey` closes "
        "them\n"
    ) in text


def test_the_delivery_gauges_are_the_configured_vendors_only(removed: MemoryWorld) -> None:
    """`syncd_deliveries{status=~"failed|dead|unknown"} > 0` (the README's alert) would fire
    for ever for a vendor that is gone."""
    cfg = removed.cfg
    [gauge] = [
        m
        for m in StoreCollector(cfg.store.path, lambda: cfg.vendors).collect()
        if m.name == "syncd_deliveries"
    ]
    assert {s.labels["vendor"] for s in gauge.samples} == {"mem"}


# --- syncd withdraw -----------------------------------------------------------------------


def test_withdraw_closes_a_removed_vendors_open_deliveries_and_keeps_their_history(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger(removed)
    acknowledged = removed.acknowledged("survey")
    code, out, err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survey")
    assert (code, err) == (0, ""), err
    assert out == (
        "survey: withdrew 2 pending, 1 failed (superseded: vendor removed from the config)\n"
        "survey: left open 1 unknown: the vendor may have them, and added back it would be "
        "sent them again; `--unknown` withdraws them too\n"
    ), out
    after = ledger(removed)
    assert len(after) == len(before)  # no row deleted
    for was, now in zip(before, after, strict=True):
        vendor, key, status, _reason = was
        if vendor == "survey" and status in ("pending", "failed"):
            assert now == (vendor, key, "superseded", REASON)
        else:
            assert now == was  # shop's, the unknown one, the sent ones: untouched
    assert removed.acknowledged("survey") == acknowledged  # CRM-0000000, CRM-0000003
    assert sorted(acknowledged) == ["CRM-0000000", "CRM-0000003"]
    assert status_of(removed)["removed_vendors"]["survey"] == {**NONE_OPEN, "unknown": 1}

    code, out, err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survey", "--unknown")
    assert (code, out) == (
        0,
        "survey: withdrew 1 unknown (superseded: vendor removed from the config)\n",
    ), err
    assert ("survey", "CRM-0000002", "superseded", REASON) in ledger(removed)
    assert list(status_of(removed)["removed_vendors"]) == ["shop"]
    code, out, _err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survey")
    assert (code, out) == (0, "survey: no open deliveries\n")


def stopped_at_first_commit(
    monkeypatch: pytest.MonkeyPatch, world: MemoryWorld, *args: str
) -> tuple[int, str, str, list[int], Callable[..., Any]]:
    """`syncd *args` in batches of one, SIGTERMed as its first batch commits: its exit code,
    output, errors, the rows each transaction changed, and the `Store.write` that counts
    them (`syncd` undoes the patches: set it again to count a later command's too)."""
    monkeypatch.setattr("syncd.state.PRUNE_BATCH", 1)
    real, commits = Store.write, []

    @contextmanager
    def write(self: Store, **kw: bool) -> Iterator[sqlite3.Connection]:
        start = self.conn.total_changes
        with real(self, **kw) as c:
            yield c
        commits.append(self.conn.total_changes - start)  # rows the transaction changed
        if len(commits) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as the first batch commits

    def unstopped(_signum: int, _frame: object) -> None:
        raise AssertionError("SIGTERM was not taken as a stop between batches")

    monkeypatch.setattr(Store, "write", write)
    before = signal.signal(signal.SIGTERM, unstopped)
    try:
        code, out, err = syncd(monkeypatch, world, *args)
    finally:
        signal.signal(signal.SIGTERM, before)
    return code, out, err, commits, write


def test_withdraw_goes_in_batches_and_a_sigterm_between_them_says_what_it_withdrew(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One UPDATE over a removed vendor's whole backlog held the write lock (the service's
    reconcile waiting) for as long as it took, and nothing stopped it but a kill. It now
    goes a prune's batches (`PRUNE_BATCH` rows a transaction), looks at SIGTERM before each
    as a prune does, says what it withdrew before the stop, exits 130; run again, it
    closes the rest."""
    code, out, err, commits, write = stopped_at_first_commit(
        monkeypatch, removed, "withdraw", "--vendor", "survey"
    )
    assert code == 130, (out, err)
    assert out == (
        "survey: stopped: withdrew 1 pending of 2 pending, 1 failed before the stop; the rest "
        "stay open: run `syncd withdraw` again to close them\n"
    ), out
    assert status_of(removed)["removed_vendors"]["survey"] == {
        **NONE_OPEN,
        "pending": 1,
        "failed": 1,
        "unknown": 1,
    }

    monkeypatch.setattr("syncd.state.PRUNE_BATCH", 1)
    monkeypatch.setattr(Store, "write", write)
    code, out, err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survey")
    assert (code, err) == (0, ""), err
    assert out.startswith("survey: withdrew 1 pending, 1 failed (superseded"), out
    assert (commits[0], sum(commits[1:]), max(commits)) == (1, 2, 1)
    assert status_of(removed)["removed_vendors"]["survey"] == {**NONE_OPEN, "unknown": 1}


def test_a_sigterm_during_one_vendors_withdraw_names_the_vendors_not_reached(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--vendor survey --vendor shop` stopped within survey's: shop's failed delivery is
    open as it was, and the output says so, not only what became of survey's."""
    code, out, err, _, _ = stopped_at_first_commit(
        monkeypatch, removed, "withdraw", "--vendor", "survey", "--vendor", "shop"
    )
    assert code == 130, (out, err)
    assert out.splitlines()[1:] == [
        "shop: not reached before the stop: its 1 failed stay open; run `syncd withdraw` "
        "again to close them"
    ], out
    assert status_of(removed)["removed_vendors"]["shop"] == {**NONE_OPEN, "failed": 1}


def test_withdraw_dry_run_counts_and_changes_nothing_even_beside_the_service(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger(removed)
    with InstanceLock(removed.cfg.store.path):
        code, out, err = syncd(
            monkeypatch, removed, "withdraw", "--dry-run", "--unknown",
            "--vendor", "shop", "--vendor", "survey",
        )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert out == (
        "shop: would withdraw 1 failed (superseded: vendor removed from the config)\n"
        "survey: would withdraw 2 pending, 1 failed, 1 unknown (superseded: vendor removed "
        "from the config)\n"
    ), out
    assert ledger(removed) == before


def test_withdraw_waits_for_no_one_while_the_service_holds_the_store(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger(removed)
    with InstanceLock(removed.cfg.store.path):
        code, out, err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survey")
    assert (code, out) == (3, "")
    assert err.startswith("syncd: another syncd (pid "), err
    assert ledger(removed) == before


def test_withdraw_refuses_a_vendor_that_is_in_the_config(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger(removed)
    code, out, err = syncd(
        monkeypatch, removed, "withdraw", "--vendor", "survey", "--vendor", "mem"
    )
    config = removed.folder / "syncd.toml"
    assert (code, out) == (2, "")
    assert err == (
        f"syncd: {config}: mem is in the config: `syncd withdraw` closes the open deliveries "
        "of a vendor removed from it\n"
        "  → to stop sending to mem, remove [vendors.mem] and reload or restart the service "
        "first; `syncd retry --vendor mem` re-sends its failed deliveries\n"
    ), err
    assert ledger(removed) == before  # survey's too: nothing is done until every name is good


def test_withdraw_refuses_a_name_no_vendor_has_with_the_nearest(
    removed: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo said "survy: no open deliveries" and exited 0: the operator took survey's
    deliveries for withdrawn."""
    before = ledger(removed)
    code, out, err = syncd(monkeypatch, removed, "withdraw", "--vendor", "survy")
    assert (code, out) == (2, "")
    assert err.startswith("syncd: withdraw --vendor survy: no such vendor\n"), err
    assert "did you mean 'survey'?" in err, err
    assert ledger(removed) == before


def test_a_vendor_added_back_is_sent_only_what_differs_from_what_it_acknowledged(
    removed: MemoryWorld,
    remotes: dict[str, Remote],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The withdrawn deliveries themselves are never sent again, by a reconcile or a retry;
    the vendor added back is compared with its acknowledgements, as any vendor: shop gets
    CRM-0000003's change (made while it was gone) and CRM-0000001, which it never
    acknowledged; survey (no watched column) the four contacts new to it, and nobody it
    acknowledged."""
    code, _out, err = syncd(
        monkeypatch, removed, "withdraw", "--unknown", "--vendor", "shop", "--vendor", "survey"
    )
    assert code == 0, err
    data = list(rows(6))
    data[3] = row(3, random.Random(0), version=1)  # another city
    removed.write(data)
    assert removed.sync().exit_code == 0  # mem only
    withdrawn = {d["id"] for d in removed.deliveries() if d["reason"] == REASON}
    assert len(withdrawn) == 5
    for remote in remotes.values():
        remote.batches.clear()

    back = configure(removed.folder, remotes, "mem", "shop", "survey")
    back.write(data)
    store = back.store()
    try:
        assert unbaselined(store, ["survey"]) == []  # the service may start
    finally:
        store.close()
    assert back.sync().exit_code == 0
    code, _out, err = syncd(monkeypatch, back, "retry", "--dead", "--unknown")
    assert code == 0, err
    assert sorted(remotes["shop"].keys()) == ["CRM-0000001", "CRM-0000003"]
    assert sorted(remotes["survey"].keys()) == [
        "CRM-0000001",
        "CRM-0000002",
        "CRM-0000004",
        "CRM-0000005",
    ]
    assert remotes["mem"].keys() == []
    with closing(sqlite3.connect(back.folder / "syncd.db")) as conn:
        still = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'superseded' AND reason = ?",
            (REASON,),
        ).fetchone()[0]
    assert still == len(withdrawn)
    assert load(back.folder / "syncd.toml").vendors.keys() == {"mem", "shop", "survey"}
