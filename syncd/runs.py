"""What every run (reconcile, retry, pull) shares: its connectors, its report's words and
how its end is recorded.

`open_connectors` builds a run's connectors from the config and closes them when it leaves.
A run that came to its end is recorded by `finish`; one that an exception ended, by
`ended`. Both set the report's exit code, so the CLI and the daemon read it there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from threading import Event
from typing import Any, ClassVar

import structlog

from syncd.clock import Clock
from syncd.config import Config
from syncd.errors import ConfigError, GuardError, StopRequested, SyncdError
from syncd.log import printable
from syncd.state import Store
from syncd.vendors import REGISTRY, Connector

log = structlog.get_logger("syncd.runs")

QUIET = ("unchanged", "gone", "stopped")  # counted, not worth a word in the summary line


def check_names(cfg: Config, only: Sequence[str] | None) -> list[str]:
    """The configured vendors, or the named ones once each is found configured."""
    names = list(cfg.vendors)
    for name in only or ():
        if name not in cfg.vendors:
            raise ConfigError(
                f"vendor {name!r} is not configured",
                file=str(cfg.path),
                hint="configured: " + ", ".join(names),
            )
    return list(only or names)


@contextmanager
def open_connectors(
    cfg: Config, clock: Clock, only: Sequence[str] | None = None
) -> Iterator[dict[str, Connector]]:
    """One connector per configured vendor (or the named ones), each closed on the way out
    (its HTTP session and watchdog), whatever ends the block."""
    opened: dict[str, Connector] = {}
    try:
        for name in check_names(cfg, only):
            opened[name] = REGISTRY[name](cfg.vendors[name], clock=clock)
        yield opened
    finally:
        for connector in opened.values():
            connector.close()


@dataclass
class Report(ABC):
    """A run's report: what it did per vendor (`counts`), its summary line, its end."""

    kind: str
    run_id: int | None = None
    exit_code: int = 0
    message: str = ""
    started: datetime | None = None

    # what each count means, in the order the summary gives them (the counts keep these
    # names in `runs.counts` and `syncd status --json`)
    WORDS: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def counts(self) -> dict[str, dict[str, Any]]:
        """Each vendor's counts, as `runs.counts` stores them."""

    @abstractmethod
    def stops(self) -> dict[str, str]:
        """Each vendor stopped for the run, with why."""

    @abstractmethod
    def nothing(self, name: str) -> str:
        """A vendor line without a count."""

    def heading(self) -> list[str]:
        """What the summary says before the vendor lines."""
        return []

    def columns(self) -> dict[str, Any]:
        """The run's row besides its counts and message (`Store.finish_run`'s keywords)."""
        return {}

    def summary(self) -> str:
        """One line for STATUS=, the journal and the CLI."""
        head = f"{self.kind} #{self.run_id}" if self.run_id else self.kind
        parts = self.heading()
        parts += [self.vendor_line(name, counts) for name, counts in self.counts().items()]
        return f"{head}: " + "; ".join(parts) + f"; exit {self.exit_code}"

    def vendor_line(self, name: str, counts: dict[str, Any]) -> str:
        """`esputnik: 150 new, 150 sent`: a vendor's counts in words."""
        order = list(self.WORDS)
        shown = [
            self.WORDS.get(k, "{} " + k.replace("_", " ")).format(counts[k])
            for k in sorted(counts, key=lambda k: (order.index(k) if k in order else 99, k))
            if k not in QUIET and counts[k]
        ]
        line = f"{name}: {', '.join(shown) or self.nothing(name)}"
        return line + (" (stopped)" if "stopped" in counts else "")

    def details(self) -> list[str]:
        """The lines under the summary: why each stopped vendor stopped (in the vendor's
        words, which may hold anything: `printable`)."""
        return [printable(f"  {name}: stopped — {why}") for name, why in self.stops().items()]


def finish(
    store: Store, clock: Clock, report: Report, stop: Event | None, *, trouble: bool
) -> None:
    """Record a run that came to its end: `interrupted` if a stop was requested on the way,
    else `partial` (exit 1) when there was `trouble`, else `ok` (exit 0)."""
    report.exit_code = 1 if trouble else 0
    stopped = stop is not None and stop.is_set()
    store.finish_run(
        report.run_id or 0,
        clock.now(),
        status="interrupted" if stopped else "partial" if trouble else "ok",
        exit_code=report.exit_code,
        counts=report.counts(),
        message=report.summary(),
        **report.columns(),
    )


def ended(store: Store, clock: Clock, report: Report, exc: BaseException) -> None:
    """Record a run that `exc` ended: `refused` by a guard, `interrupted` by Ctrl-C or a
    stop request, else `failed` (a SyncdError, or a bug: any exception). Never raises, so
    `exc` is what the caller sees."""
    if isinstance(exc, GuardError):
        status = "refused"
    elif isinstance(exc, KeyboardInterrupt | StopRequested):
        status = "interrupted"
    else:
        status = "failed"
    if isinstance(exc, SyncdError):
        report.exit_code, report.message = exc.exit_code, str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        report.exit_code, report.message = 130, "interrupted (Ctrl-C or SIGTERM)"
    else:
        report.exit_code, report.message = 1, f"{type(exc).__name__}: {exc}"
    if not report.run_id:
        return
    try:
        store.finish_run(
            report.run_id,
            clock.now(),
            status=status,
            exit_code=report.exit_code,
            counts=report.counts(),
            message=report.message,
            **report.columns(),
        )
    except Exception:  # the store itself failing: the next run closes this one as crashed
        log.exception("could not record the end of the run", status=status)
