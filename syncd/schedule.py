"""Schedule expressions: a crontab line, or `every N[s|m|h]` for an interval.

The nights the clocks change, a crontab line runs as cron runs it (`Crontab`): when they go
back, a line that names its hours (`30 2 * * *`) runs once at the wall-clock time that
happens twice, and one whose hour is `*` or `*/N` keeps its pace in real time. When they go
forward, APScheduler's own behaviour: a time that does not exist (02:30) runs once, at the
instant it would be at the old offset (03:30 on the new clock), and `*/30 * * * *` skips the
missing wall-clock times, keeping its 30 real minutes; the next day is not skipped (`Crontab`).

The day of the week is cron's (0 or 7 is Sunday, 1-5 Monday to Friday), not APScheduler 3.x's
(0 is Monday), and a line restricting both the day of the month and the day of the week runs
on days matching either, as cron runs it (APScheduler alone: only on days matching both).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import structlog
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import AllExpression
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("syncd.schedule")

_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbers: 0 (and 7) is Sunday


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

    def _increment_field_value(self, dateval: datetime, fieldnum: int) -> tuple[datetime, int]:
        """APScheduler 3.x moves to the next day (hour, ...) by adding the wall-clock difference
        in real time: across the clocks going forward it lands an hour past the wall-clock
        time it aimed at, so `0 0 * * *` went from midnight on the day the clocks changed to
        midnight two days on, silently skipping a night. Take the wall-clock time it aimed
        at when that comes first (a time the gap skips as APScheduler gives one: at the old
        offset); where the clocks went back, its real-time step comes first and stays."""
        stepped, fieldnum = super()._increment_field_value(dateval, fieldnum)
        aimed = dateval.replace(tzinfo=None) + (stepped.astimezone(UTC) - dateval.astimezone(UTC))
        zone: tzinfo = self.timezone
        walls = [aimed.replace(tzinfo=zone, fold=fold) for fold in (0, 1)]
        real = [
            w for w in walls if w.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == aimed
        ]
        exists = real or walls[:1]  # in the gap: at the old offset, as APScheduler does
        # at the same instant too: a wall time the gap skips (23:00 at the old offset) is
        # the instant the wall time after it (00:00 at the new one) is
        after = [w for w in exists if w.astimezone(UTC) >= dateval.astimezone(UTC)]
        return min([*after, stepped], key=lambda d: d.astimezone(UTC)), fieldnum


def _weekdays(field: str) -> str:
    """Cron's day-of-week field in APScheduler 3.x's terms, which counts from Monday (0 is
    Monday there, so cron's weekdays `1-5` would run Tuesday to Saturday): as day names."""
    if field.startswith("*") and "/" not in field:
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        span, slash, step = item.partition("/")
        first, dash, last = span.partition("-")
        low, high = (0, 6) if span == "*" else (_day(first), _day(last) if dash else None)
        if high is None:
            high = 6 if slash else low
        if high < low or (slash and not step.isdigit()) or (slash and int(step) == 0):
            raise ValueError(f"day of week {field!r}: write e.g. 1-5 (Monday to Friday) or sun")
        days.update(d % 7 for d in range(low, high + 1, int(step) if slash else 1))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in _DAYS:
        return _DAYS.index(text)
    raise ValueError(f"{text!r} is no day of the week (0 to 7, 0 and 7 Sunday, or sun to sat)")


def trigger_for(expr: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger for a config schedule expression (raises ValueError)."""
    tz = ZoneInfo(timezone)
    match = _EVERY.match(expr.strip())
    if match:
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
        if seconds < 1:  # `every 0.001s` would submit a job a millisecond, each one refused
            raise ValueError("the interval must be at least 1s")
        return IntervalTrigger(seconds=seconds, timezone=tz)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a crontab line has 5 fields (minute hour day month weekday), not {len(fields)}"
        )
    minute, hour, day, month, weekday = fields

    def line(day: str, weekday: str) -> Crontab:
        return Crontab(
            minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=tz
        )

    trigger: BaseTrigger
    if day.startswith("*") or weekday.startswith("*"):
        trigger = line(day, _weekdays(weekday))
    else:  # both restricted: cron runs it on days matching either, APScheduler on both
        trigger = OrTrigger([line(day, "*"), line("*", _weekdays(weekday))])
    # a day no month has (`0 2 30 2 *`): APScheduler would keep the job paused, silently,
    # and the service would never run it
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise ValueError("it names a date that never comes, so it would never run")
    return trigger


def last_fire(trigger: BaseTrigger, since: datetime, now: datetime) -> datetime | None:
    """The last time in [since, now] a crontab line fired (None for `every N`, which starts
    over with the service): the run a scheduler that was not running then missed."""
    if isinstance(trigger, IntervalTrigger):
        return None
    last, fire = None, trigger.get_next_fire_time(None, since)
    while fire is not None and fire <= now:
        last, fire = fire, trigger.get_next_fire_time(fire, fire)
    return last


def next_fire(expr: str, timezone: str, now: datetime) -> datetime | None:
    trigger = trigger_for(expr, timezone)
    if isinstance(trigger, IntervalTrigger):
        return now + timedelta(seconds=trigger.interval_length)
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire
