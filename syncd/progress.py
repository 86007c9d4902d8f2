"""Progress on a terminal, drawn by rich on stderr: the export read (bytes of the total),
the diff, each vendor's delivery ("sent N of M, R/s, ≈ T left") and each pull stream.

`for_terminal()` gives a display only when stderr is a terminal: never in the daemon, the
journal or a pipe. The display is transient: it is cleared when it stops, so the summary
printed after it has a line of its own.

A rate-limited vendor's time left comes from its pacing (`min_interval` seconds between
calls, `batch_size` contacts a call) from the start, before any rate is measured: 50,000
contacts to Hello Customer at 100 a call and 1 call/s is "≈ 8 min" up front. It is never
less than the measured rate gives.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from syncd.vendors.base import Connector


def duration(seconds: float) -> str:
    """A rough duration for people: "40 s", "8 min", "2 h 05 min"."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def paced_seconds(connector: Connector, contacts: int) -> float | None:
    """How long `contacts` take at the vendor's pacing alone, if it is rate limited."""
    if connector.min_interval <= 0:
        return None
    return math.ceil(contacts / connector.batch_size) * connector.min_interval


class _Sending(ProgressColumn):
    """ "sent N of M, R/s, ≈ T left" for a vendor's task; nothing for the other tasks."""

    def render(self, task: Task) -> Text:
        if "vendor" not in task.fields:
            return Text("")
        total = int(task.total or 0)
        done = int(task.completed)
        parts = [f"sent {done:,} of {total:,}"]
        speed = task.finished_speed or task.speed
        if speed:
            parts.append(f"{speed:,.0f}/s")
        left = [(total - done) / speed] if speed else []
        paced = task.fields.get("paced")
        if paced is not None and total:
            left.append(paced * (total - done) / total)
        if left and done < total:
            parts.append(f"≈ {duration(max(left))} left")
        return Text(", ".join(parts))


class _Pulled(ProgressColumn):
    """ "N records" for a pull stream's task."""

    def render(self, task: Task) -> Text:
        if "stream" not in task.fields:
            return Text("")
        return Text(f"{int(task.completed):,} records")


class _Bytes(ProgressColumn):
    """Bytes of the total and the read rate, for the export's task."""

    def __init__(self) -> None:
        super().__init__()
        self.size, self.speed = DownloadColumn(), TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if "export" not in task.fields:
            return Text("")
        return Text.assemble(self.size.render(task), ", ", self.speed.render(task))


class _Bar(Progress):
    """rich's Progress, polling the export's position before each redraw."""

    poll: Callable[[], None] | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.poll is not None:
            self.poll()
        yield from super().get_renderables()


class Display:
    """One run's progress lines. Use as a context manager; the methods are called by the
    pipeline as the run moves on."""

    def __init__(self, console: Console | None = None) -> None:
        self.bar = _Bar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _Bytes(),
            _Sending(),
            _Pulled(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self.export: tuple[TaskID, Callable[[], int]] | None = None
        self.diff: TaskID | None = None
        self.vendors: dict[str, TaskID] = {}
        self.streams: dict[str, TaskID] = {}

    def __enter__(self) -> Display:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()

    def _poll(self) -> None:
        if self.export is not None:
            task, position = self.export
            self.bar.update(task, completed=position())

    def reading(self, path: Path, size: int, position: Callable[[], int]) -> None:
        """The export is being read (and diffed as it is read); `position()`: bytes so far.
        Polled at each refresh, so reading costs nothing per row."""
        task = self.bar.add_task(f"reading {path.name}", total=size, export=True)
        self.export = (task, position)
        self.bar.poll = self._poll

    def diffing(self) -> None:
        """The export is read; the diff finishes (gone contacts, the transaction)."""
        self._end_export()
        self.diff = self.bar.add_task("diffing", total=None)

    def _end_export(self) -> None:
        if self.export is not None:
            task, _ = self.export
            self.bar.update(task, completed=self.bar.tasks[task].total, visible=False)
            self.export = None

    def sending(self, connector: Connector, contacts: int) -> None:
        """`contacts` are about to go to this vendor."""
        self._end_export()
        if self.diff is not None:
            self.bar.update(self.diff, visible=False)
            self.diff = None
        self.vendors[connector.name] = self.bar.add_task(
            connector.name,
            total=contacts,
            vendor=True,
            paced=paced_seconds(connector, contacts),
        )

    def sent(self, vendor: str, done: int) -> None:
        """The delivery loop's `progress` callback: `done` contacts sent so far."""
        task = self.vendors.get(vendor)
        if task is not None:
            self.bar.update(task, completed=done)

    def pulled(self, vendor: str, stream: str, records: int) -> None:
        """A page of `records` of this stream is stored."""
        name = f"{vendor}/{stream}"
        if name not in self.streams:
            self.streams[name] = self.bar.add_task(f"pulling {name}", total=None, stream=True)
        self.bar.advance(self.streams[name], records)


def for_terminal() -> Display | None:
    """A display when stderr is a terminal; None otherwise (pipes, the journal, cron)."""
    return Display() if sys.stderr.isatty() else None
