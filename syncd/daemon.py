"""`syncd run`: the scheduler, signals, systemd notify and the instance lock.

- Jobs run one at a time on a single worker thread, so a reconcile and a pull never write
  at once; `coalesce=True`, `max_instances=1` and an explicit `misfire_grace_time` make a
  late run happen once, neither skipped nor doubled (after a suspend, a SIGSTOP, a long job);
  a nightly reconcile the service was not running for (a reboot) runs once at its start.
- `WATCHDOG=1` is sent by a job of the scheduler itself, on its own executor: if the
  scheduler's loop hangs, the pings stop and systemd restarts the service. It pings only
  while the worker is idle or its job shows progress (`syncd.liveness`): a job that shows
  none for `[schedule] stall_seconds` beyond the waits it announced (a request under its
  deadline, a pacing or Retry-After sleep) is stalled; that is logged once with where it is
  stuck, said in `systemctl status` and in the lock file (`syncd status` shows it), and the
  pings stop, so systemd restarts the service
  (the run it leaves `running` is closed by the next). Not under systemd's watchdog, the
  stall is logged all the same.
- SIGTERM/SIGINT: stop taking jobs, let the request in flight finish, record what was
  acknowledged, exit 0. SIGHUP: re-read the config; keep the old one if the new one is bad.
- A trigger vendor that has acknowledged no contact of a store that knows some
  (`unbaselined`) stops the start (exit 2: systemd does not restart it) and is refused by a
  reload: its next reconcile would survey everyone, which only the operator may ask for.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import structlog
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd import liveness
from syncd import log as logmod
from syncd.clock import SYSTEM, SystemClock
from syncd.config import Config, load
from syncd.errors import ConfigError, LockHeldError, StopRequested, SyncdError
from syncd.lock import InstanceLock
from syncd.metrics import MetricsServer, StoreCollector
from syncd.notify import notify, watchdog_interval
from syncd.pipeline import reconcile
from syncd.pull import pull
from syncd.runs import Report
from syncd.schedule import last_fire, trigger_for
from syncd.source import find_export
from syncd.state import OPEN_STATUSES, Store, iso, parse_iso, refuse_truncated

log = structlog.get_logger("syncd.daemon")

R = TypeVar("R", bound=Report)

WATCH_EVERY = 15.0  # seconds between looks for a new export (watch_export = true)
# seconds between looks for a stalled job when systemd does not watch (no WATCHDOG_USEC);
# under its watchdog, every ping (WatchdogSec/2) looks first
CHECK_EVERY = 5.0
STACK_FRAMES = 12  # of a stalled job's thread, innermost last, in the stall's log line


class Daemon:
    def __init__(
        self,
        config_path: Path,
        clock: SystemClock = SYSTEM,
        reload_requested: threading.Event | None = None,
    ) -> None:
        """`reload_requested`: the event a SIGHUP sets from the command's start (`syncd
        run`), before this daemon exists; the reload is done once the service is up."""
        self.config_path = config_path
        self.clock = clock
        self.cfg: Config = load(config_path)
        logmod.add_secrets(self.cfg.secrets)
        self.stop = clock.stop
        self.lock = InstanceLock(self.cfg.store.path)
        self.scheduler: BackgroundScheduler | None = None
        self.last_export: tuple[str, float, int] | None = None
        self.reload_requested = reload_requested or threading.Event()
        self._scheduled: dict[str, tuple[str, str]] = {}  # job id → (expression, time zone)
        # the connection `run` holds from start to exit (the main thread's: a reload's
        # check reads through it; the jobs open their own, on the worker thread)
        self.keeper: Store | None = None
        self.liveness = liveness.LIVE  # where the jobs' requests, sleeps and commits report
        self.liveness.bound = self.cfg.schedule.stall_seconds
        self._pinging = False  # under systemd's watchdog (WATCHDOG_USEC)
        self._stall: liveness.Stall | None = None  # the stall said, until progress resumes

    # --- lifecycle -------------------------------------------------------------------
    def run(self) -> int:
        # a reload asked for while starting (migrations can take minutes) is done once the
        # service is up: SIGHUP's default action ends the process, and systemd counts a
        # death by SIGHUP as clean, so Restart=on-failure would leave the service down
        signal.signal(signal.SIGHUP, self._on_hup)
        refuse_truncated(self.cfg.store.path)  # before the lock file, which tells it: exit 2
        self.lock.acquire()  # LockHeldError → exit 3
        if not faulthandler.is_enabled():
            # systemd's watchdog ends a stalled service with SIGABRT: every thread's stack
            # goes to the journal first
            faulthandler.enable()
        metrics: MetricsServer | None = None
        try:
            # migrate before READY, and keep this connection until exit: SQLite keeps -wal
            # and -shm while one is open, and read-only analysts cannot create them
            self.keeper = keeper = Store.open(self.cfg.store.path)
            # a first sync cut short (killed between its pieces) is undone by the next run
            # before anything else: that store is as empty as it was
            cut = keeper.unfinished_first_sync() is not None
            if not cut and (names := unbaselined(keeper, self.cfg.vendors)):
                raise ConfigError(
                    f"not started: {_have(names)} acknowledged none of the contacts the store "
                    f"{self.cfg.store.path} knows: the next reconcile would survey every one",
                    file=str(self.config_path),
                    hint=baseline_hint(names) + "; then start the service",
                )
            if self.cfg.metrics.listen:
                collector = StoreCollector(self.cfg.store.path, lambda: self.cfg.vendors)
                metrics = MetricsServer(self.cfg.metrics.listen, collector)
            self.scheduler = self._scheduler()
            self._install_signals()
            self.scheduler.start()
            notify("READY=1", f"STATUS=waiting; next reconcile {self._next('reconcile')}")
            log.info("started", config=str(self.config_path), store=str(self.cfg.store.path))
            offset = self._clock_offset()
            lost = False
            while not self.stop.wait(1.0):
                if not self.lock.check():
                    lost = True
                    log.error(
                        "the lock file was removed, and another syncd took the new one: "
                        "stopping, so that one instance runs on the store",
                        file=str(self.lock.path),
                        hint="never remove the lock file: a crash leaves none held",
                    )
                    self.stop.set()
                    break
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                # the scheduler sleeps until its next run on the monotonic clock, which stops
                # while the machine is suspended: woken up hours late, it found a nightly run
                # long past its grace. A resume (or a clock step) moves the wall clock away
                # from the monotonic one: look at the schedule at once.
                moved = (now := self._clock_offset()) - offset
                offset = now
                if abs(moved) > 2:
                    log.info(
                        "the clock moved (a resume, or a step): looking at the schedule",
                        seconds=round(moved),
                    )
                    self.scheduler.wakeup()
            notify("STOPPING=1", "STATUS=stopping")
            log.info("stopping: letting the job in flight finish")
            self.scheduler.shutdown(wait=True)
            log.info("stopped")
            if lost:
                raise LockHeldError(
                    f"stopped: another syncd took the store's lock file {self.lock.path}, "
                    "which was removed while this one ran",
                    hint="never remove the lock file; syncd restarts once the other is done",
                )
            return 0
        finally:
            if metrics is not None:
                metrics.close()
            if self.keeper is not None:
                self.keeper.close()
                self.keeper = None
            self.lock.release()

    def _clock_offset(self) -> float:
        """The wall clock less the monotonic one: constant but for a suspend or a step."""
        return self.clock.now().timestamp() - self.clock.monotonic()

    def _scheduler(self) -> BackgroundScheduler:
        sched = BackgroundScheduler(
            timezone=self.cfg.schedule.timezone,
            executors={
                "default": ThreadPoolExecutor(max_workers=1),
                "watchdog": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.cfg.schedule.misfire_grace_seconds,
            },
        )
        self._schedule_jobs(sched)
        self._catch_up(sched)
        interval = watchdog_interval()
        self._pinging = interval is not None
        sched.add_job(
            self.watchdog_job,
            IntervalTrigger(seconds=interval or CHECK_EVERY),
            id="watchdog",
            executor="watchdog",
            misfire_grace_time=None,
        )
        sched.add_listener(self._missed, EVENT_JOB_MISSED)
        return sched

    def _schedule_jobs(self, sched: BackgroundScheduler) -> None:
        """Schedule the reconcile and the pull (and the export watch). At a reload, a job
        whose expression and time zone are unchanged keeps its next run: a new trigger
        would start an `every 30m` interval over from now, so reloads more often than the
        interval (a configuration tool's) would postpone it for good."""
        schedule = self.cfg.schedule
        tz = schedule.timezone
        grace = schedule.misfire_grace_seconds
        for job_id, func, expr in (
            ("reconcile", self.reconcile_job, schedule.reconcile),
            ("pull", self.pull_job, schedule.pull),
        ):
            if self._scheduled.get(job_id) == (expr, tz) and sched.get_job(job_id):
                sched.modify_job(job_id, misfire_grace_time=grace)
                continue
            sched.add_job(
                func,
                trigger_for(expr, tz),
                id=job_id,
                replace_existing=True,
                misfire_grace_time=grace,
            )
            self._scheduled[job_id] = (expr, tz)
        if schedule.watch_export:
            sched.add_job(
                self.watch_job,
                IntervalTrigger(seconds=WATCH_EVERY),
                id="watch",
                replace_existing=True,
            )
        elif sched.get_job("watch"):
            sched.remove_job("watch")

    def _catch_up(self, sched: BackgroundScheduler) -> None:
        """The scheduler keeps its jobs in memory: started after its nightly time (a reboot
        at 02:00, a restart, a stop), the service waited for the next night, and that run
        was missed without a word. A reconcile that fell due less than misfire_grace_seconds
        ago, with none started since but one a stop interrupted, runs now, once, as a
        suspended machine's would. Not after one that died (`running`, `crashed`: it may be
        what kills the process, and systemd would start it over every 10 s), nor on a store
        that never had one (a first start is not a missed run)."""
        schedule, now = self.cfg.schedule, self.clock.now()
        since = now - timedelta(seconds=schedule.misfire_grace_seconds)
        # the trigger `_schedule_jobs` just gave the job (triggers are pure: reading its fire
        # times changes nothing), not one built again from the config
        due = last_fire(sched.get_job("reconcile").trigger, since, now)
        assert self.keeper is not None, "`run` opens the store before the scheduler"
        if due is None or not self.keeper.scalar("SELECT 1 FROM runs WHERE kind = 'reconcile'"):
            return
        last = parse_iso(
            self.keeper.scalar(
                "SELECT max(started_at) FROM runs WHERE kind = 'reconcile' "
                "AND status != 'interrupted'"
            )
        )
        if last is None or last < due:
            log.info("the reconcile due while syncd was not running runs now", due=iso(due))
            sched.modify_job("reconcile", next_run_time=now)

    def _missed(self, event: JobExecutionEvent) -> None:
        """A run found more than misfire_grace_seconds late (the machine suspended, or the
        clock stepped, across it): skipped, said in the journal, and for the reconcile in
        `systemctl status` too (a pull queued behind a long reconcile is missed as well, and
        the next one comes within its interval)."""
        due = event.scheduled_run_time.isoformat(timespec="seconds")
        log.warning(
            "a scheduled run was missed beyond misfire_grace_seconds", job=event.job_id, due=due
        )
        if event.job_id == "reconcile":
            notify(f"STATUS=reconcile due at {due} missed (more than misfire_grace_seconds late)")

    def _next(self, job_id: str) -> str:
        job = self.scheduler.get_job(job_id) if self.scheduler else None
        return job.next_run_time.isoformat(timespec="seconds") if job and job.next_run_time else "-"

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received", signal=signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested.set()

    def reload(self) -> None:
        """SIGHUP: take the new config if it is valid; otherwise keep the old one and say why.
        `RELOADING=1` (with the `MONOTONIC_USEC` that Type=notify-reload, systemd >= 253,
        needs to match it to its reload) and, whatever the outcome, `READY=1`: a reload that
        fails keeps the service running, and systemd would show it `reloading` without it."""
        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        status = "config reload failed, running with the old config: see the journal"
        try:
            status = self._reload()
        except Exception:
            log.exception("config reload failed; keeping the running config")
        finally:
            notify("READY=1", f"STATUS={status}")

    def _reload(self) -> str:
        """The reload; returns the status line to show."""
        try:
            cfg = load(self.config_path)
        except SyncdError as exc:
            log.error("config reload failed; keeping the running config", error=str(exc))
            return f"config reload failed, running with the old config: {exc}"
        if cfg.store.path != self.cfg.store.path:
            log.error("config reload: [store] path cannot change while running; restart instead")
            return "config reload refused: [store] path cannot change while running; restart"
        assert self.keeper is not None, "a reload is the running daemon's (`run`)"
        try:
            added = unbaselined(self.keeper, [n for n in cfg.vendors if n not in self.cfg.vendors])
        except SyncdError as exc:  # the store could not be read: nothing tells it is safe
            log.error("config reload failed; keeping the running config", error=str(exc))
            return f"config reload failed, running with the old config: {exc}"
        if added:
            names = ", ".join(added)
            log.error(
                "config reload refused; keeping the running config: a trigger vendor new to "
                "this store would survey every known contact at the next reconcile",
                vendors=names,
                hint=f"stop the service; {baseline_hint(added)}; then start it",
            )
            return f"config reload refused: {names} would survey every known contact"
        if cfg.metrics != self.cfg.metrics:
            log.warning("config reload: a change to [metrics] takes effect at the next restart")
        logmod.add_secrets(cfg.secrets)
        self.cfg = cfg
        self.liveness.bound = cfg.schedule.stall_seconds
        if self.scheduler:
            self._schedule_jobs(self.scheduler)
        log.info("config reloaded", config=str(self.config_path))
        return f"config reloaded; next reconcile {self._next('reconcile')}"

    # --- the watchdog (its own executor) ----------------------------------------------
    def watchdog_job(self) -> None:
        """Ping systemd's watchdog while the worker is idle or its job shows progress. A
        stalled job is said once (the journal, with where its thread is stuck, and
        `systemctl status`) and the pings stop: systemd restarts the service after
        WatchdogSec. Should the job show progress again first, the pings resume."""
        stall = self.liveness.stalled(liveness.now())
        if stall is None:
            if self._stall is not None:
                self._resumed(self._stall)
            if self._pinging:
                notify("WATCHDOG=1")
            return
        if self._stall is None or self._stall.job != stall.job:
            self._stalled(stall)
        self._stall = stall

    def _stalled(self, stall: liveness.Stall) -> None:
        quiet = round(stall.quiet)
        outcome = (
            "the watchdog pings stop: systemd restarts syncd"
            if self._pinging
            else "not under systemd's watchdog: restart syncd"
        )
        extra = {}
        if stall.overdue_wait is not None:
            extra["overdue_wait"] = round(stall.overdue_wait, 1)
        log.error(
            "job stalled: no progress for longer than stall_seconds",
            job=stall.job,
            seconds=quiet,
            stall_seconds=stall.bound,
            hint=f"{outcome}; `stack` is where the job's thread is stuck",
            stack=_stack(stall.thread),
            **extra,
        )
        notify(f"STATUS={stall.job} stalled: no progress for {quiet} s; {outcome}")
        since = self.clock.now() - timedelta(seconds=stall.quiet)
        self._note(
            {"stalled": {"job": stall.job, "since": iso(since), "stall_seconds": stall.bound}}
        )

    def _resumed(self, stall: liveness.Stall) -> None:
        self._stall = None
        self._note(None)
        job = self.liveness.running
        log.warning("the stalled job shows progress again", job=stall.job, running=job)
        if job is not None:  # else it finished, and said so in STATUS=
            notify(f"STATUS={job} running again after a stall; see the journal")

    def _note(self, said: dict[str, Any] | None) -> None:
        """Say a stall in the lock file, where `syncd status` reads it (the stalled job may
        hold the store's write lock, or be stuck in SQLite itself); last, after the journal
        and `systemctl status`: should the file system be what is stuck, they are said."""
        try:
            self.lock.note(said)
        except OSError as exc:
            log.warning(
                "could not say the stall in the lock file", file=str(self.lock.path), error=str(exc)
            )

    @contextmanager
    def _working(self, job: str) -> Iterator[None]:
        """`job` runs on this thread: the watchdog holds it to showing progress."""
        self.liveness.begin(job, liveness.now(), threading.get_ident())
        try:
            yield
        finally:
            self.liveness.end(liveness.now())

    # --- jobs (all on the one worker thread) -----------------------------------------
    def _job(self, kind: str, work: Callable[[Store], R]) -> R | None:
        if self.stop.is_set():
            return None
        store: Store | None = None
        try:
            # the start set the store up: one gone or truncated since is not made anew
            store = Store.open(self.cfg.store.path, create=False)
            report = work(store)
        except StopRequested:
            log.info("job interrupted by stop request", job=kind)
            return None
        except SyncdError as exc:
            log.error("job failed", job=kind, error=str(exc), exit_code=exc.exit_code)
            notify(f"STATUS=last {kind} failed: {exc}")
            return None
        except Exception:
            log.exception("job crashed", job=kind)
            notify(f"STATUS=last {kind} crashed; see the journal")
            return None
        finally:
            if store is not None:
                store.close()
        log.info("job finished", job=kind, summary=report.summary(), exit_code=report.exit_code)
        notify(f"STATUS={report.summary()}")
        return report

    def reconcile_job(self) -> None:
        cfg = self.cfg
        with self._working("reconcile"):
            report = self._job(
                "reconcile", lambda store: reconcile(cfg, store, self.clock, stop=self.stop)
            )
            if report and report.plan:
                self.last_export = _signature(Path(report.plan.export))
            if report and report.exit_code in (0, 1) and not self.stop.is_set():
                self.prune(cfg)  # after any reconcile that finished, failed deliveries or not

    def prune(self, cfg: Config) -> None:
        """[store] retention; a failure is logged and waits for the next reconcile, and so
        does what a stop (SIGTERM) leaves: it ends the prune after the batch in progress."""
        try:
            store = Store.open(cfg.store.path, create=False)
            try:
                gone = store.prune(
                    self.clock.now(),
                    runs_days=cfg.store.keep_runs_days,
                    payload_days=cfg.store.keep_payload_days,
                    stop=self.stop,
                )
            finally:
                store.close()
        except SyncdError as exc:
            log.error("prune failed", error=str(exc))
            return
        if self.stop.is_set():
            log.info(
                "prune stopped between batches by the stop request; the next removes the rest",
                **gone,
            )
        else:
            log.info("pruned", **gone)

    def pull_job(self) -> None:
        cfg = self.cfg
        with self._working("pull"):
            self._job("pull", lambda store: pull(cfg, store, self.clock, stop=self.stop))

    def watch_job(self) -> None:
        """Reconcile as soon as a new export has settled, between scheduled runs."""
        with self._working("watch"):  # a look at the export's folder (NFS can hang too)
            try:
                path = find_export(self.cfg.source, self.clock.now()).path
            except SyncdError:
                return  # nothing new, or still being written: look again shortly
            signature = _signature(path)
            if signature != self.last_export:
                log.info("new export settled; reconciling now", export=str(path))
                self.reconcile_job()
                self.last_export = signature


def unbaselined(store: Store, among: Iterable[str]) -> list[str]:
    """The trigger vendors among `among` that have acknowledged no contact of `store` when
    it has some: the next reconcile would send each of them every contact, and every send
    reaches a person. `syncd run` does not start with one, and a reload does not add one:
    the service never surveys a whole known store on its own, and `syncd sync --baseline`,
    which records the contacts as acknowledged instead, cannot run beside it (the lock). An
    empty store is a first sync: every contact is new to every vendor anyway.

    Unless someone asked for those sends: a sync that delivered to the vendor (by hand, or
    the service's own first sync of an empty store: `runs.delivered`) while they were
    queued, but the vendor was down, or answered too late. Queued by a sync that did not
    deliver to it (`syncd sync --vendor <another>` records the diff for every vendor), or
    closed since (`syncd withdraw`), they are not: a vendor added to a known store and
    never delivered to is still refused."""
    from syncd.vendors import REGISTRY

    triggers = [name for name in among if REGISTRY[name].kind == "trigger"]
    if not triggers or not store.scalar("SELECT 1 FROM contacts LIMIT 1"):
        return []
    acked = "SELECT 1 FROM vendor_state WHERE vendor = ? LIMIT 1"
    asked = (  # an open delivery from a run at or before the last that delivered to it
        f"SELECT 1 FROM deliveries INDEXED BY deliveries_open WHERE vendor = ?1 AND status IN "
        f"{OPEN_STATUSES!r} AND run_id <= (SELECT max(r.id) FROM runs r, json_each(r.delivered)"
        " v WHERE v.value = ?1) LIMIT 1"
    )
    return [
        name
        for name in triggers
        if not store.scalar(acked, (name,)) and not store.scalar(asked, (name,))
    ]


def baseline_hint(names: Sequence[str]) -> str:
    """What to do, with the service stopped, about the `unbaselined` vendors `names`."""
    only = " ".join(f"--vendor {name}" for name in names)
    return (
        f"run `syncd sync --baseline {only}` to record the current contacts as already "
        f"surveyed, or `syncd sync {only}` once by hand to survey every one of them on "
        "purpose (README: First run with a trigger vendor)"
    )


def _have(names: Sequence[str]) -> str:
    """`trigger vendor altcraft has`, `trigger vendors altcraft, dropthought have`."""
    if len(names) == 1:
        return f"trigger vendor {names[0]} has"
    return f"trigger vendors {', '.join(names)} have"


def _stack(thread: int | None) -> str:
    """The innermost frames of `thread`'s stack (file, line, function, source line)."""
    frame = sys._current_frames().get(thread) if thread is not None else None
    if frame is None:
        return "(the job's thread is gone)"
    return "".join(traceback.format_stack(frame)[-STACK_FRAMES:]).rstrip()


def _signature(path: Path) -> tuple[str, float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime, st.st_size)
