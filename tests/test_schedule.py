"""Schedule expressions across the nights the clocks change (Europe/Brussels, 2026: forward
on 29 March at 02:00, back on 25 October at 03:00). The trigger is driven as APScheduler's
scheduler drives it — each next fire time from the previous one — with time as an argument:
no sleeping, no scheduler."""

from __future__ import annotations

import io
import itertools
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from syncd import log as logmod
from syncd.config import load
from syncd.errors import ConfigError
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


def nightly(expr: str, zone: str, first: date, days: int) -> list[datetime]:
    """`expr`'s fire times in UTC from `first` for `days` local days, as the scheduler
    drives the trigger: each from the previous one, a second after it ran."""
    tz = ZoneInfo(zone)
    trigger = trigger_for(expr, zone)
    now = datetime.combine(first, time(0), tz).astimezone(UTC) - timedelta(seconds=1)
    end = datetime.combine(first + timedelta(days=days - 1), time(23, 59), tz).astimezone(UTC)
    out: list[datetime] = []
    previous = None
    while (fire := trigger.get_next_fire_time(previous, now)).astimezone(UTC) <= end:
        out.append(fire.astimezone(UTC))
        previous, now = fire, fire.astimezone(UTC) + timedelta(seconds=1)
    return out


@pytest.mark.parametrize(
    ("zone", "month"),
    [
        ("Europe/Berlin", 3),
        ("Europe/Berlin", 10),
        ("America/New_York", 3),
        ("America/New_York", 11),
        ("America/Havana", 3),
        ("America/Havana", 11),
    ],
)
def test_a_nightly_line_runs_exactly_once_every_night_across_the_change_of_clocks(
    zone: str, month: int
) -> None:
    """Every `M H * * *` fires once each local night for the five nights around the change:
    at H:M, at the first of a repeated H:M, and at the old offset for an H:M the gap skips.
    APScheduler 3.x stepped to the next day by adding 24 hours, an hour too many the day the
    clocks go forward: `0 0 * * *` (and anything at 00:xx, or before a midnight gap) skipped
    the next night without a word (Berlin, New York: 30 and 9 March 2026; Havana, whose
    clocks go forward at midnight: its 8 March)."""
    tz = ZoneInfo(zone)
    changes = [
        day
        for day in (date(2026, month, 1) + timedelta(days=n) for n in range(31))
        if day.month == month
        and datetime.combine(day, time(0), tz).utcoffset()
        != datetime.combine(day + timedelta(days=1), time(0), tz).utcoffset()
    ]
    first = changes[0] - timedelta(days=2)
    for hour, minute in itertools.product(range(24), (0, 30)):
        expected = [
            datetime.combine(first + timedelta(days=n), time(hour, minute), tz).astimezone(UTC)
            for n in range(5)
        ]
        got = nightly(f"{minute} {hour} * * *", zone, first, 5)
        assert got == expected, f"{minute} {hour} * * * in {zone}"


def test_a_weekly_line_after_the_clocks_go_forward_is_not_a_week_late() -> None:
    """`0 0 * * 1`, Mondays at midnight: the Monday after the clocks went forward (Sunday 29
    March 2026 in Berlin) ran a week late, on 6 April."""
    got = nightly("0 0 * * 1", "Europe/Berlin", date(2026, 3, 27), 14)
    assert [f.astimezone(ZoneInfo("Europe/Berlin")).date() for f in got] == [
        date(2026, 3, 30),
        date(2026, 4, 6),
    ]


@pytest.mark.parametrize(
    ("weekday", "days"),
    [
        ("0", {"Sun"}),
        ("7", {"Sun"}),
        ("1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("5-7", {"Fri", "Sat", "Sun"}),
        ("0,6", {"Sat", "Sun"}),
        ("*/2", {"Sun", "Tue", "Thu", "Sat"}),
        ("1-5/2", {"Mon", "Wed", "Fri"}),
        ("sun", {"Sun"}),
        ("MON-FRI", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("*", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
    ],
)
def test_the_day_of_the_week_is_crons(weekday: str, days: set[str]) -> None:
    """A crontab line's day of week counts from Sunday (0 or 7), as cron's does. APScheduler
    3.x's `from_crontab` counts from Monday: `1-5` ran Tuesday to Saturday, `0` on Mondays."""
    got = nightly(f"0 2 * * {weekday}", "Europe/Brussels", date(2026, 12, 7), 14)
    assert {f.strftime("%a") for f in got} == days
    assert len(got) == 2 * len(days)


def test_a_line_restricting_the_day_of_the_month_and_of_the_week_runs_on_either() -> None:
    """Cron runs `0 2 1,15 * 1` on the 1st, the 15th and every Monday; APScheduler alone
    only on a 1st or a 15th that is a Monday (none in these two months)."""
    got = nightly("0 2 1,15 * 1", "Europe/Brussels", date(2026, 12, 1), 62)
    days = [f.astimezone(ZoneInfo("Europe/Brussels")).date() for f in got]
    mondays = [d for d in days if d.weekday() == 0]
    assert {d.day for d in days if d not in mondays} == {1, 15}
    assert len(mondays) == 8 and len(days) == len(set(days)) == 8 + 4
    assert all(f.astimezone(ZoneInfo("Europe/Brussels")).hour == 2 for f in got)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 2 * * 8", "'8' is no day of the week"),
        ("0 2 * * 5-1", "day of week '5-1'"),
        ("every 0.5s", "at least 1s"),
        ("every 0s", "at least 1s"),
        ("24:00", "a crontab line has 5 fields (minute hour day month weekday), not 1"),
        ("0 0 2 * * *", "a crontab line has 5 fields (minute hour day month weekday), not 6"),
    ],
)
def test_a_line_cron_and_this_scheduler_would_read_apart_is_refused(
    tmp_path: Path, line: str, why: str
) -> None:
    """Refused at load, naming the file and key, with what to write instead."""
    (tmp_path / "m.toml").write_text('[fields]\nemail = "Email"\n')
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\npath = "c.csv"\nkey = "Id"\n[store]\npath = "s.db"\n'
        f'[schedule]\nreconcile = "{line}"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:1"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: [schedule] reconcile: "), message
    assert why in message and 'e.g. "30 2 * * *"' in message, message


def test_a_wall_time_right_after_a_gap_at_the_old_offset_still_fires() -> None:
    """Nuuk's clocks go from 23:00 to 00:00 on 28 March 2026 (at 01:00 UTC): 23:00 at the old
    offset and 00:00 at the new one are the same instant, and `0 */2 * * *` fires at that
    00:00, which exists (a first take on the fix stepped past it, to 02:00)."""
    got = nightly("0 */2 * * *", "America/Nuuk", date(2026, 3, 28), 2)
    assert utc(2026, 3, 29, 1) in got
    assert [b - a for a, b in itertools.pairwise(got)].count(timedelta(hours=3)) == 0
