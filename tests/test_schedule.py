"""Schedule expressions across the nights the clocks change (Europe/Brussels, 2026: forward
on 29 March at 02:00, back on 25 October at 03:00). The trigger is driven as APScheduler's
scheduler drives it — each next fire time from the previous one — with time as an argument:
no sleeping, no scheduler."""

from __future__ import annotations

import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from syncd import log as logmod
from syncd.schedule import trigger_for

ZONE = "Europe/Brussels"
TZ = ZoneInfo(ZONE)


def fires(expr: str, start: datetime, hours: float) -> list[datetime]:
    """The fire times of `expr` from `start` for `hours`, in UTC."""
    trigger = trigger_for(expr, ZONE)
    end = start.astimezone(UTC) + timedelta(hours=hours)
    out: list[datetime] = []
    previous, now = None, start
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or fire > end:
            return out
        out.append(fire.astimezone(UTC))
        previous, now = fire, fire.astimezone(UTC) + timedelta(seconds=1)  # the job ran


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_a_fixed_time_fires_once_on_the_night_the_clocks_go_back() -> None:
    """`30 2 * * *` names 02:30, which happens twice on the last Sunday of October: APScheduler
    3.x fires at both (00:30 and 01:30 UTC), a second reconcile an hour after the first.
    It is one scheduled moment: the repeat is skipped, with a line in the log."""
    out = io.StringIO()
    logmod.configure(level="INFO", json=True, stream=out)
    assert fires("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=TZ), 64) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 summer time
        utc(2026, 10, 26, 1, 30),  # 02:30 winter time, the next day
        utc(2026, 10, 27, 1, 30),
    ]
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if "repeat" in x]
    assert line["level"] == "info" and line["skipped"] == "2026-10-25T02:30:00+01:00", line


def test_a_fixed_time_is_not_run_again_by_a_service_started_in_the_repeated_hour() -> None:
    """Started (or reloaded) at 02:10 winter time, after 02:30 summer time ran, the next
    reconcile is the next day's."""
    trigger = trigger_for("30 2 * * *", ZONE)
    now = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=TZ)
    assert now.astimezone(UTC) == utc(2026, 10, 25, 1, 10)
    assert trigger.get_next_fire_time(None, now).astimezone(UTC) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(("expr", "minutes"), [("*/30 * * * *", 30), ("15 * * * *", 60)])
def test_a_schedule_of_every_hour_keeps_its_pace_in_real_time_across_the_fold(
    expr: str, minutes: int
) -> None:
    """A crontab line whose hour field is `*` runs by the clock as it goes: every 30 (or 60)
    real minutes through the repeated hour, both 02:00s and both 02:30s included."""
    out = fires(expr, datetime(2026, 10, 25, 0, 50, tzinfo=TZ), 6)
    assert len(out) == 6 * 60 // minutes
    assert {b - a for a, b in itertools.pairwise(out)} == {timedelta(minutes=minutes)}


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "*/30 * * * *", "15 * * * *"])
def test_the_night_the_clocks_go_forward_is_apschedulers_own(expr: str) -> None:
    """The spring-forward gap keeps APScheduler's behaviour: a fixed time that does not
    exist (02:30 on 29 March) fires once, an hour later on the clock (03:30 summer time,
    which is 02:30 at the winter offset); a schedule of every hour skips the missing wall
    times and keeps its real-time pace (01:30 winter time, then 03:00 summer time)."""
    start = datetime(2026, 3, 28, 12, tzinfo=TZ)
    plain = CronTrigger.from_crontab(expr, timezone=TZ)
    end = start.astimezone(UTC) + timedelta(hours=40)
    expected, previous, now = [], None, start.astimezone(UTC)
    while (fire := plain.get_next_fire_time(previous, now)) <= end:
        expected.append(fire.astimezone(UTC))
        previous, now = fire, fire.astimezone(UTC) + timedelta(seconds=1)
    assert fires(expr, start, 40) == expected
    if expr == "30 2 * * *":
        assert expected == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
        assert expected[0].astimezone(TZ).isoformat() == "2026-03-29T03:30:00+02:00"
