"""A reconcile run, plan then apply: lock → read → diff → guard → record → deliver → record.

The CLI and the daemon call `reconcile`; it uses the store, the differ and the delivery loop,
and turns nothing into exit codes itself except through `RunReport.exit_code`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from threading import Event
from typing import Any

import structlog

from syncd import log as logmod
from syncd.clock import Clock
from syncd.config import Config
from syncd.crashpoints import crashpoint
from syncd.diff import Differ, Plan
from syncd.errors import ConfigError, GuardError, SyncdError
from syncd.lock import InstanceLock
from syncd.push import Delivered, Deliverer, Progress
from syncd.source import Export, find_export
from syncd.state import Store
from syncd.vendors import REGISTRY, Connector

log = structlog.get_logger("syncd.pipeline")


class _Rollback(Exception):
    """Leave the diff's transaction without committing (dry run, refused export)."""


@dataclass
class RunReport:
    kind: str
    run_id: int | None = None
    exit_code: int = 0
    plan: Plan | None = None
    delivered: dict[str, Delivered] = field(default_factory=dict)
    message: str = ""

    def counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = self.plan.counts() if self.plan else {}
        for name, d in self.delivered.items():
            merged = Counter(out.get(name, {})) + d.counts
            out[name] = dict(merged)
            if d.stopped:
                out[name]["stopped"] = d.stopped
        return out

    def summary(self) -> str:
        """One line for STATUS=, the journal and the CLI."""
        head = f"{self.kind} #{self.run_id}" if self.run_id else self.kind
        parts = []
        if self.plan:
            parts.append(f"{self.plan.rows_read} rows, {self.plan.quarantined} quarantined")
        for name, counts in self.counts().items():
            shown = ", ".join(
                f"{n} {k}"
                for k, n in sorted(counts.items())
                if k not in ("unchanged", "gone", "stopped") and n
            )
            parts.append(
                f"{name}: {shown or 'nothing to send'}"
                + (" (stopped)" if "stopped" in counts else "")
            )
        return f"{head}: " + "; ".join(parts) + f"; exit {self.exit_code}"


def open_connectors(
    cfg: Config, clock: Clock, only: Sequence[str] | None = None
) -> dict[str, Connector]:
    """One connector per configured vendor (or the named ones)."""
    names = list(cfg.vendors)
    for name in only or ():
        if name not in cfg.vendors:
            raise ConfigError(
                f"vendor {name!r} is not configured",
                file=str(cfg.path),
                hint="configured: " + ", ".join(names),
            )
    return {n: REGISTRY[n](cfg.vendors[n], clock=clock) for n in (only or names)}


@contextmanager
def opened(cfg: Config, *, lock: bool = True) -> Iterator[Store]:
    """The instance lock (unless `lock=False`) and the store, released on exit."""
    with InstanceLock(cfg.store.path) if lock else nullcontext():
        store = Store.open(cfg.store.path)
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
    progress: Progress | None = None,
) -> RunReport:
    """Diff the export against the store and deliver what changed. Raises SyncdError.

    `rebaseline=False` sends what a changed digest definition makes differ (a trigger
    vendor's new `on_change` column surveys everyone) instead of re-baselining it."""
    report = RunReport("dry run" if dry_run else "reconcile")
    connectors = open_connectors(cfg, clock)
    now = clock.now()
    if not dry_run:
        report.run_id = store.start_run("reconcile", now)
        logmod.bind(run_id=report.run_id)
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
    except SyncdError as exc:
        report.exit_code = exc.exit_code
        report.message = str(exc)
        if report.run_id:
            status = "refused" if isinstance(exc, GuardError) else "failed"
            store.finish_run(
                report.run_id,
                clock.now(),
                status=status,
                exit_code=exc.exit_code,
                counts=report.counts(),
                message=str(exc),
                rows_read=report.plan.rows_read if report.plan else None,
            )
        raise
    finally:
        for c in connectors.values():
            c.close()
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
    progress: Progress | None,
) -> None:
    now = clock.now()
    path = find_export(cfg.source, now)
    targets = list(vendors or cfg.vendors)
    open_connectors(cfg, clock, targets)  # validates the names before anything is written
    with Export(path, cfg.source, force=force) as export:
        if not dry_run:
            for name in targets:
                store.requeue_failed(name, cfg.vendors[name].delivery.max_attempts, now)
        refused = None
        try:
            with store.write():
                run_id = report.run_id or store.insert_run("reconcile", now, str(path))
                differ = Differ(
                    cfg,
                    store,
                    connectors,
                    run_id,
                    now,
                    baseline=targets if baseline else (),
                    rebaseline=rebaseline,
                )
                report.plan = differ.run(export)
                refused = differ.guard(force)
                if refused or dry_run:
                    raise _Rollback
        except _Rollback:
            pass
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
        counts=plan.counts(),
    )
    for notice in plan.notices(dry_run):  # stored hashes made another way: say what it did
        log.warning("digest definition changed", message=notice)
    if refused:
        raise GuardError(
            f"refused: {refused}; nothing was sent",
            hint="if the export really lost these contacts, run `syncd sync --force`",
        )
    if dry_run:
        return
    if not baseline:
        for name in targets:
            connector = connectors[name]
            deliverer = Deliverer(
                store,
                connector,
                clock.now,
                max_attempts=cfg.vendors[name].delivery.max_attempts,
                stop=stop,
                progress=progress,
            )
            logmod.bind(vendor=name)
            try:
                report.delivered[name] = deliverer.run()
            finally:
                logmod.unbind("vendor")
    backlog = store.backlog()
    trouble = _trouble(report) or any(backlog.get(n, {}).get("pending") for n in report.delivered)
    report.exit_code = 1 if trouble else 0
    store.finish_run(
        report.run_id or 0,
        clock.now(),
        status="partial" if trouble else "ok",
        exit_code=report.exit_code,
        counts=report.counts(),
        message=report.summary(),
        rows_read=plan.rows_read,
        quarantined=plan.quarantined,
        export_path=str(path),
    )


def deliver(
    cfg: Config,
    store: Store,
    clock: Clock,
    statuses: Sequence[str],
    vendors: Sequence[str] | None = None,
    *,
    stop: Event | None = None,
) -> RunReport:
    """`syncd retry`: put deliveries in `statuses` back to pending and deliver them now."""
    connectors = open_connectors(cfg, clock, vendors)
    report = RunReport("retry", run_id=store.start_run("retry", clock.now()))
    try:
        for name, connector in connectors.items():
            requeued = store.requeue(statuses, name, clock.now())
            log.info("requeued", vendor=name, rows=requeued, statuses=list(statuses))
            report.delivered[name] = Deliverer(
                store,
                connector,
                clock.now,
                max_attempts=cfg.vendors[name].delivery.max_attempts,
                stop=stop,
            ).run()
    finally:
        for c in connectors.values():
            c.close()
    trouble = _trouble(report)
    report.exit_code = 1 if trouble else 0
    store.finish_run(
        report.run_id or 0,
        clock.now(),
        status="partial" if trouble else "ok",
        exit_code=report.exit_code,
        counts=report.counts(),
        message=report.summary(),
    )
    return report


def _trouble(report: RunReport) -> bool:
    """Exit 1: a vendor stopped, or deliveries failed, were left pending or are unknown."""
    return any(
        d.stopped or d.counts["failed"] or d.counts["unknown"] or d.counts["pending"]
        for d in report.delivered.values()
    )
