"""Schedule expressions: a crontab line, or `every N[s|m|h]` for an interval.

The nights the clocks change, a crontab line runs as cron runs it (`Crontab`): when they go
back, a line that names its hours (`30 2 * * *`) runs once at the wall-clock time that
happens twice, and one whose hour is `*` or `*/N` keeps its pace in real time. When they go
forward, APScheduler's own behaviour: a time that does not exist (02:30) runs once, at the
instant it would be at the old offset (03:30 on the new clock), and `*/30 * * * *` skips the
missing wall-clock times, keeping its 30 real minutes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import AllExpression
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("syncd.schedule")

_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}


class Crontab(CronTrigger):  # type: ignore[misc]  # APScheduler is untyped
    """A CronTrigger that, when the clocks go back, does not fire again at a wall-clock time
    the fold repeats, unless its hour field is `*` or `*/N` (cron's own rule). APScheduler
    3.x fires at both: 02:30 summer time, then 02:30 winter time an hour later, which for a
    nightly reconcile is the same scheduled moment twice. The repeat is known by the fire
    time alone (the second of the two instants, `fold=1`), so a service started or reloaded
    inside the repeated hour does not fire again either."""

    __slots__ = ()

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous, now)
        while fire is not None and self._repeated(fire):
            log.info(
                "schedule: skipping a wall-clock time the clocks going back repeat",
                schedule=str(self),
                skipped=fire.isoformat(),
            )
            fire = super().get_next_fire_time(fire, fire)
        return fire

    def _repeated(self, fire: datetime) -> bool:
        hour = self.fields[self.FIELD_NAMES.index("hour")]
        if any(type(e) is AllExpression for e in hour.expressions):
            return False
        # through UTC: astimezone to the trigger's own zone would keep APScheduler's fold as is
        return fire.astimezone(UTC).astimezone(self.timezone).fold == 1


def trigger_for(expr: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger for a config schedule expression (raises ValueError)."""
    tz = ZoneInfo(timezone)
    match = _EVERY.match(expr.strip())
    if match:
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
        if seconds <= 0:
            raise ValueError("the interval must be positive")
        return IntervalTrigger(seconds=seconds, timezone=tz)
    trigger = Crontab.from_crontab(expr, timezone=tz)
    # a day no month has (`0 2 30 2 *`): APScheduler would keep the job paused, silently,
    # and the service would never run it
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise ValueError("it names a date that never comes, so it would never run")
    return trigger


def next_fire(expr: str, timezone: str, now: datetime) -> datetime | None:
    trigger = trigger_for(expr, timezone)
    if isinstance(trigger, IntervalTrigger):
        return now + timedelta(seconds=trigger.interval_length)
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire
