"""SOQL date and dateTime values: literal parsing, relative day ranges, and the text form
the sandbox stores them in (``YYYY-MM-DD`` and ``YYYY-MM-DDThh:mm:ss.000+0000`` in UTC),
which sorts lexicographically, so comparisons run on the stored text."""

from __future__ import annotations

import datetime as dt
import re

from .ast import DateRange

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})")

# Day ranges relative to today: name -> (first day, last day).
_FIXED_RANGES = {
    "TODAY": (0, 0),
    "YESTERDAY": (-1, -1),
    "TOMORROW": (1, 1),
}
# Ranges that take ``:n``: name -> n -> (first day, last day).
_PARAMETERIZED_RANGES = {
    "LAST_N_DAYS": lambda n: (-n, 0),  # n days ago through the end of today
    "NEXT_N_DAYS": lambda n: (1, n),  # tomorrow through n days from now
    "N_DAYS_AGO": lambda n: (-n, -n),  # the single day n days ago
}


def is_date_range_name(name: str) -> bool:
    upper = name.upper()
    return upper in _FIXED_RANGES or upper in _PARAMETERIZED_RANGES


def date_range(name: str, parameter: str | None = None) -> DateRange:
    """``TODAY`` or ``LAST_N_DAYS`` with ``parameter="7"``; ValueError if it is not one of them."""
    upper = name.upper()
    if parameter is None:
        if upper not in _FIXED_RANGES:
            raise ValueError(f"{name} needs a number of days, as in {upper}:7")
        first, last = _FIXED_RANGES[upper]
        return DateRange(upper, first, last)
    if upper not in _PARAMETERIZED_RANGES:
        raise ValueError(f"{name} does not take a number of days")
    if not parameter.isdigit():
        raise ValueError(f"the number of days must be a non-negative integer, not '{parameter}'")
    first, last = _PARAMETERIZED_RANGES[upper](int(parameter))
    return DateRange(f"{upper}:{int(parameter)}", first, last)


def parse_temporal(text: str) -> dt.date | dt.datetime:
    """An unquoted SOQL date (``2026-01-01``) or dateTime (with ``Z`` or an offset); datetimes
    come back in UTC. ValueError for anything else, including impossible dates."""
    if _DATE.fullmatch(text):
        return dt.date.fromisoformat(text)
    match = _DATETIME.fullmatch(text)
    if not match:
        raise ValueError(f"'{text}' is not a valid date or dateTime")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    microsecond = int((fraction or "0").ljust(6, "0")[:6])
    if zone == "Z":
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 18 or minutes > 59:
            raise ValueError(f"'{text}' has an invalid time zone offset")
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    value = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), microsecond, tz)
    return value.astimezone(dt.UTC)


def format_date(value: dt.date) -> str:
    return value.isoformat()


def format_datetime(value: dt.datetime) -> str:
    """The stored dateTime text: UTC, milliseconds, ``+0000``."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def range_bounds(value: DateRange, now: dt.datetime, *, as_datetime: bool) -> tuple[str, str]:
    """The range as stored text ``[start, end)``: midnight UTC of its first day up to midnight
    after its last day, as dates or as dateTimes."""
    today = now.astimezone(dt.UTC).date()
    start = today + dt.timedelta(days=value.first)
    end = today + dt.timedelta(days=value.last + 1)
    if not as_datetime:
        return format_date(start), format_date(end)
    return (
        format_datetime(dt.datetime.combine(start, dt.time(), dt.UTC)),
        format_datetime(dt.datetime.combine(end, dt.time(), dt.UTC)),
    )
