"""Export dates read for a vendor's typed values (Dropthought's DATE metadata, eSputnik's
date custom fields): ISO 8601, or DD/MM/YYYY and MM/DD/YYYY by the order the operator
states in the vendor's `date_order`, never guessed.

`read_date` gives the date and time in the vendor's zone, without a zone: a time with `Z`
or an offset is converted to it, one without is taken to be in it already, a date alone is
midnight. Fractions of a second are dropped. Refused, with a ValueError saying why:
impossible dates, a time whose offset puts it outside the calendar in the vendor's zone
(0001-01-01T00:00+01:00), a slashed date while `date_order` is unset, a day > 12 where
`date_order` puts the month (the column is in the other order), two-digit years, other
separators, month names.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
SLASHED_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def read_date(value: str, order: str | None, zone: ZoneInfo, vendor: str) -> datetime:
    """An export date and time in `zone`, naive (see the module docstring), or ValueError
    saying why it cannot be read; `order` is the vendor's `date_order` ("DMY", "MDY" or
    None), `vendor` the table that sets it."""
    if ISO_DATE.fullmatch(value):
        try:
            when = datetime.fromisoformat(value)
            if when.tzinfo is not None:
                when = when.astimezone(zone).replace(tzinfo=None)
        except ValueError:
            raise ValueError(f"{value!r} is not a calendar date and time") from None
        except OverflowError:  # 9999-12-31T23:00-01:00 is past the calendar in UTC
            raise ValueError(
                f"{value!r} is outside the calendar once converted to {zone.key}"
            ) from None
        return when.replace(microsecond=0)
    slashed = SLASHED_DATE.fullmatch(value)
    if slashed is None:
        raise ValueError(
            f"cannot read {value!r} as a date: write it as ISO 8601 (2026-01-10, "
            "2026-01-10T14:05:30+01:00), DD/MM/YYYY or MM/DD/YYYY, with an optional HH:MM[:SS]"
        )
    if order is None:
        raise ValueError(
            f"{value!r} may be DD/MM/YYYY or MM/DD/YYYY: set date_order in [vendors.{vendor}]"
        )
    a, b, year, hour, minute, sec = (int(g or 0) for g in slashed.groups())
    day, month = (a, b) if order == "DMY" else (b, a)
    if month > 12 and day <= 12:
        raise ValueError(
            f"{value!r} has month {month} under date_order = {order!r}: the column looks "
            f"{'MM/DD' if order == 'DMY' else 'DD/MM'}/YYYY; fix the export or date_order"
        )
    try:
        return datetime(year, month, day, hour, minute, sec)
    except ValueError:
        raise ValueError(f"{value!r} is not a calendar date and time") from None
