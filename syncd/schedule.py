"""Schedule expressions: a crontab line, or `every N[s|m|h]` for an interval."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}


def trigger_for(expr: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger for a config schedule expression (raises ValueError)."""
    tz = ZoneInfo(timezone)
    match = _EVERY.match(expr.strip())
    if match:
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
        if seconds <= 0:
            raise ValueError("the interval must be positive")
        return IntervalTrigger(seconds=seconds, timezone=tz)
    trigger = CronTrigger.from_crontab(expr, timezone=tz)
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
