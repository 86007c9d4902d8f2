"""A reconcile run, plan then apply: lock → read → diff → guard → record → deliver → record.

The CLI and the daemon call `reconcile` (and `deliver` for `syncd retry`); it uses the store,
the differ and the delivery loop, and records the run's end through `syncd.runs`, which
sets `RunReport.exit_code`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from syncd import log as logmod
from syncd.clock import Clock
from syncd.config import Config
from syncd.crashpoints import crashpoint
from syncd.diff import Differ
from syncd.errors import GuardError, SyncdError, VendorError
from syncd.lock import InstanceLock
from syncd.plan import Plan
from syncd.push import Delivered, Deliverer
from syncd.runs import Report, check_names, ended, finish, open_connectors
from syncd.source import Export, find_export
from syncd.state import Store, iso, missing, refuse_truncated, unwritten, unwritten_error
from syncd.status import reason_lines, run_reasons
from syncd.vendors import Connector

if TYPE_CHECKING:
    from syncd.progress import Display

log = structlog.get_logger("syncd.pipeline")


class _Rollback(Exception):
    """Leave the diff's transaction without committing (dry run, refused export)."""


@dataclass
class RunReport(Report):
    """A reconcile's or a retry's report: the plan, and each vendor's delivery loop."""

    plan: Plan | None = None
    delivered: dict[str, Delivered] = field(default_factory=dict)
    # the run's failures, unknowns, pending with a reason and skips, grouped by vendor and
    # reason as `syncd status` groups them (`syncd.status.run_reasons`)
    reasons: list[dict[str, Any]] = field(default_factory=list)

    WORDS: ClassVar[dict[str, str]] = {
        "new": "{} new",
        "changed": "{} changed",
        "sent": "{} sent",
        "failed": "{} failed",
        "unknown": "{} with an unknown outcome",
        "pending": "{} left pending",
        "in_flight": "{} held in a job still open (polled again next run)",
        "superseded": "{} replaced by a newer change",
        "skipped": "{} skipped",
        "quarantined": "{} not sendable to it (quarantined)",
        "baseline": "{} recorded as acknowledged (--baseline)",
        "baseline_queued": "{} queued, recorded as acknowledged without sending (--baseline)",
        "baseline_unchanged": "{} acknowledged other data, recorded as the export holds them"
        " (--baseline)",
        "not_triggered": "{} new but not surveyed (on_new = false)",
        "rebaselined": "{} re-baselined",
        "already_pending": "{} already waiting to be sent",
        "already_in_flight": "{} already being sent",
        "already_failed": "{} already failed (retried)",
        "already_unknown": "{} already sent with an unknown outcome",
        "already_dead": "{} already dead (`syncd retry --dead`)",
    }

    def counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = self.plan.counts() if self.plan else {}
        for name, d in self.delivered.items():
            merged = Counter(out.get(name, {})) + d.counts
            out[name] = dict(merged)
            if d.stopped:
                out[name]["stopped"] = d.stopped
        return out

    def stops(self) -> dict[str, str]:
        return {name: d.stopped for name, d in self.delivered.items() if d.stopped}

    def nothing(self, name: str) -> str:
        return "nothing to retry" if self.kind == "retry" else "nothing to send"

    def heading(self) -> list[str]:
        return (
            [f"{self.plan.rows_read} rows, {self.plan.quarantined} quarantined"]
            if self.plan
            else []
        )

    def columns(self) -> dict[str, Any]:
        if not self.plan:
            return {}
        plan = self.plan
        return {
            "rows_read": plan.rows_read,
            "quarantined": plan.quarantined,
            "export_path": plan.export,
        }

    def details(self) -> list[str]:
        """Why each stopped vendor stopped, then the run's failures and skips grouped by
        reason, with a few keys each."""
        return super().details() + reason_lines(self.reasons)

    def trouble(self, store: Store) -> bool:
        """Exit 1: a vendor stopped, or deliveries failed, were left pending or are unknown."""
        backlog = store.backlog()
        return any(
            d.stopped
            or d.counts["failed"]
            or d.counts["unknown"]
            or d.counts["pending"]
            or d.counts["in_flight"]
            or backlog.get(name, {}).get("pending")
            for name, d in self.delivered.items()
        )


@contextmanager
def opened(
    cfg: Config, *, lock: bool = True, create: bool = True, dry_run: bool = False
) -> Iterator[Store]:
    """The instance lock (unless `lock=False`) and the store, released on exit. With
    `create=False` a missing or empty store (`state.empty`) is an error, before the lock file
    or a folder is made; so is, always, a 0-byte store syncd used before (`state.truncated`).
    `dry_run`: no lock, and the store as it is (`Store.read`: never migrated, which would
    leave a service of the version before a store from a newer syncd), or, missing, an
    empty one in a temporary folder: a dry run writes nothing."""
    if not create and not cfg.store.path.is_file():
        raise missing(cfg.store.path)
    if (not create or dry_run) and unwritten(cfg.store.path):
        raise unwritten_error(cfg.store.path)  # before the lock file: none is left beside it
    refuse_truncated(cfg.store.path)  # before the lock file, which tells it
    if dry_run and not cfg.store.path.exists():
        with tempfile.TemporaryDirectory(prefix="syncd-dry-run-") as folder:
            store = Store.open(Path(folder) / cfg.store.path.name)
            try:
                yield store
            finally:
                store.close()
        return
    with InstanceLock(cfg.store.path) if lock and not dry_run else nullcontext():
        store = Store.read(cfg.store.path) if dry_run else Store.open(cfg.store.path, create=create)
        try:
            yield store
        finally:
            store.close()


def reconcile(
    cfg: Config,
    store: Store,
    clock: Clock,
    *,
    dry_run: bool = False,
    force: bool = False,
    vendors: Sequence[str] | None = None,
    baseline: bool = False,
    rebaseline: bool = True,
    stop: Event | None = None,
    progress: Display | None = None,
) -> RunReport:
    """Diff the export against the store and deliver what changed. Raises SyncdError.

    `rebaseline=False` sends what a changed digest definition makes differ (a trigger
    vendor's new `on_change` column surveys everyone) instead of re-baselining it.
    Whatever ends the run, it is recorded: a raised exception as `refused`, `interrupted`
    (Ctrl-C, SIGTERM) or `failed` (see `ended`), then raised again."""
    report = RunReport("dry run" if dry_run else "reconcile")
    with open_connectors(cfg, clock) as connectors:
        report.started = clock.now()
        if not dry_run:
            report.run_id = store.start_run("reconcile", report.started)
            logmod.bind(run_id=report.run_id)
        elif unfinished := store.unfinished_first_sync():
            log.warning(
                "a first sync did not finish: the next sync undoes what it wrote, before "
                "anything else; this dry run counts those contacts as known",
                run=unfinished,
            )
        try:
            _reconcile(
                cfg,
                store,
                clock,
                connectors,
                report,
                dry_run,
                force,
                vendors,
                baseline,
                rebaseline,
                stop,
                progress,
            )
        except BaseException as exc:
            ended(store, clock, report, exc)
            raise
        finally:
            logmod.unbind("run_id")
    return report


def _reconcile(
    cfg: Config,
    store: Store,
    clock: Clock,
    connectors: dict[str, Connector],
    report: RunReport,
    dry_run: bool,
    force: bool,
    vendors: Sequence[str] | None,
    baseline: bool,
    rebaseline: bool,
    stop: Event | None,
    progress: Display | None,
) -> None:
    now = clock.now()
    found = find_export(cfg.source, now)
    path = found.path
    targets = check_names(cfg, vendors)  # before anything is written
    with Export(found, cfg.source, force=force) as export:  # the file found, or refused
        if progress:
            progress.reading(path, found.stat.st_size, lambda: export.position)
        if not dry_run:
            for name in targets:
                store.requeue_failed(name, cfg.vendors[name].delivery.max_attempts, now)
        refused = None
        try:
            # the diff's WAL is copied back while the delivery runs (`checkpoints_aside`)
            with store.write(copy_back=False):
                run_id = report.run_id or store.insert_run("reconcile", now, str(path))
                differ = Differ(
                    cfg,
                    store,
                    connectors,
                    run_id,
                    now,
                    baseline=targets if baseline else (),
                    rebaseline=rebaseline,
                    pieces=not dry_run,
                    stop=stop,
                )
                report.plan = differ.run(export)
                if progress:
                    progress.diffing()
                refused = report.plan.guard(
                    cfg.source.max_drop, cfg.suppression.max_resurvey, force
                )
                # read inside the transaction: a dry run's skips are rolled back with it
                report.reasons = run_reasons(store, run_id, None)
                if refused or dry_run:
                    raise _Rollback
        except _Rollback:
            store.undo_first_sync()  # what a refused first sync committed goes too
        except BaseException:
            with suppress(SyncdError):  # else the next run undoes it, before anything else
                store.undo_first_sync()
            raise
        else:
            crashpoint("diff_committed")
    plan = report.plan
    assert plan is not None
    log.info(
        "diffed",
        export=str(path),
        rows=plan.rows_read,
        quarantined=plan.quarantined,
        gone=plan.gone,
        withdrawn=plan.withdrawn,
        counts=plan.counts(),
    )
    for notice in plan.notices(dry_run):  # stored hashes made another way: say what it did
        log.warning("digest definition changed", message=notice)
    if refused:
        reason, hint = refused
        raise GuardError(f"refused: {reason}; nothing was sent", hint=hint)
    if dry_run:
        return
    if not baseline:
        store.delivering(plan.run_id, targets)  # what the operator asked to be sent
        for name in targets:
            report.delivered[name] = _deliver_one(
                cfg, store, clock, connectors[name], stop, progress
            )
    _finish(store, clock, report, stop)


def _deliver_one(
    cfg: Config,
    store: Store,
    clock: Clock,
    connector: Connector,
    stop: Event | None,
    progress: Display | None,
) -> Delivered:
    """One vendor's delivery loop. Should it raise, its in-flight deliveries are settled as
    a restart would settle them (`abandon`) first. What fails this vendor alone (`_contained`:
    a bug, a hostile answer read wrongly, a vendor error the loop let through) is logged with
    its traceback and returned as the vendor stopped for the run, so the vendors after it
    are delivered; the store failing, a stop request, Ctrl-C and syncd's other own errors
    end the run, raised again. Both `reconcile` and `retry` deliver through here."""
    name = connector.name
    max_attempts = cfg.vendors[name].delivery.max_attempts
    sup = cfg.suppression
    held = sup.unsubscribed and (connector.kind == "trigger" or sup.upserts)
    if progress:
        open_rows = store.backlog().get(name, {})
        progress.sending(connector, open_rows.get("pending", 0) + open_rows.get("in_flight", 0))
    deliverer = Deliverer(
        store,
        connector,
        clock.now,
        max_attempts=max_attempts,
        stop=stop,
        progress=progress.sent if progress else None,
        hold=sup.channels if held else None,
    )
    logmod.bind(vendor=name)
    try:
        return deliverer.run()
    except BaseException as exc:
        if not _contained(exc):
            abandon(store, connector, clock, max_attempts)
            raise
        out = deliverer.out
        out.stopped = _unexpected(name, exc)
        log.exception("vendor stopped for this run", error=out.stopped)
        settled, status = abandon(store, connector, clock, max_attempts)
        out.counts[status] += settled
        return out
    finally:
        logmod.unbind("vendor")


def _contained(exc: BaseException) -> bool:
    """Whether `exc`, raised out of one vendor's delivery loop, fails that vendor alone: any
    Exception but those every vendor would meet (the store failing: StoreError or a bare
    sqlite3.Error) or that syncd raises to end a run (a stop request, a guard, the config:
    its other SyncdErrors); a VendorError is this vendor's. BaseExceptions (Ctrl-C,
    SystemExit) always end the run."""
    if isinstance(exc, VendorError):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, SyncdError | sqlite3.Error)


def _unexpected(name: str, exc: BaseException) -> str:
    """Why a vendor was stopped by an exception its delivery loop did not handle."""
    if isinstance(exc, VendorError):
        return str(exc)
    what = logmod.scrub(f"{type(exc).__name__}: {exc}")  # a hostile answer's words, maybe
    if len(what) > 300:
        what = what[:300] + "…"
    return (
        f"{name}: stopped by an error syncd did not expect ({what}); its deliveries in flight "
        "were settled as a restart would, the other vendors were delivered (a bug in syncd: "
        "report it, with the log's traceback)"
    )


def abandon(store: Store, connector: Connector, clock: Clock, max_attempts: int) -> tuple[int, str]:
    """Leave no delivery `in_flight` that no request carries, after the delivery loop raised:
    an upsert's goes back to pending (re-sending is harmless), a trigger's becomes `unknown`
    (the vendor may have it), as a restart's resume would settle them. One with a recorded
    async job stays in flight: the job carries it, and the next run polls it. Returns how
    many it settled, and to which status."""
    unknown = connector.kind == "trigger"
    status = "unknown" if unknown else "pending"
    reason = (
        "in flight when its delivery failed: the vendor may have it; `syncd retry --unknown` "
        "sends it again"
        if unknown
        else "in flight when its delivery failed; re-sent"
    )
    try:
        rows = [r for r in store.in_flight(connector.name) if r["job"] is None]
        outcomes = [(r["id"], r["key"], status, reason, None) for r in rows]
        store.settle(connector.name, outcomes, clock.now(), max_attempts)
    except Exception:  # the store itself failing: the next run's resume settles them
        log.exception("could not settle the in-flight deliveries", vendor=connector.name)
        return 0, status
    if rows:
        log.warning(
            "settled the in-flight deliveries of a failed delivery", rows=len(rows), status=status
        )
    return len(rows), status


def _finish(store: Store, clock: Clock, report: RunReport, stop: Event | None) -> None:
    """Record a reconcile or a retry that came to its end, with its failures and skips."""
    assert report.run_id is not None
    report.reasons = run_reasons(store, report.run_id, iso(report.started or clock.now()))
    finish(store, clock, report, stop, trouble=report.trouble(store))


def deliver(
    cfg: Config,
    store: Store,
    clock: Clock,
    statuses: Sequence[str],
    vendors: Sequence[str] | None = None,
    *,
    stop: Event | None = None,
    progress: Display | None = None,
) -> RunReport:
    """`syncd retry`: put deliveries in `statuses` back to pending and deliver them now."""
    with open_connectors(cfg, clock, vendors) as connectors:
        report = RunReport("retry", started=clock.now())
        report.run_id = store.start_run("retry", report.started or clock.now())
        try:
            for name, connector in connectors.items():
                requeued = store.requeue(statuses, name, clock.now())
                log.info("requeued", vendor=name, rows=requeued, statuses=list(statuses))
                report.delivered[name] = _deliver_one(cfg, store, clock, connector, stop, progress)
            _finish(store, clock, report, stop)
        except BaseException as exc:
            ended(store, clock, report, exc)
            raise
    return report
