"""Amounts, quantities and rates as exact decimals, from where they enter to the warehouse.

Salesforce keeps currency to 18 digits, two of them decimals; a float keeps 15 or 16 significant
digits, so a float anywhere on the way can lose cents. Numbers are read as ``Decimal`` where they
enter (the REST client's ``parse_float``, the Bulk CSV converters, the warehouse's JSON codec) and
stay ``Decimal`` through validation, the transform and the load. Floats still come from other
places (a config file, a test) and are taken by their shortest repr, the number they show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
# The warehouse's money columns are NUMERIC(18, 2): two decimals, below 10^16.
DECIMALS = 2
LIMIT = Decimal(10) ** 16
# SQLite has no decimal type: its NUMERIC column holds a double, exact to 15 significant digits.
SQLITE_DIGITS = 15


def exact(value: Any) -> Decimal | None:
    """``value`` as a finite Decimal; None for None, booleans, blanks, text that is not a number,
    NaN and infinities."""
    kind = type(value)
    if kind is Decimal:
        return value if value.is_finite() else None
    if value is None or kind is bool:
        return None
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value)) if math.isfinite(value) else None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def total(values: Iterable[Decimal | None]) -> Decimal:
    """The exact sum; a missing value counts as nothing."""
    result = Decimal(0)  # added in order, as sum(..., Decimal(0)) does, without a generator's cost
    for value in values:
        if value is not None:
            result += value
    return result


def keeps_as_double(value: Decimal) -> bool:
    """Whether a double (SQLite's NUMERIC) gives ``value`` back exactly: always up to 15
    significant digits, sometimes beyond."""
    return Decimal(repr(float(value))) == value


def problem(value: Decimal, *, double_only: bool = False) -> str | None:
    """Why the warehouse cannot keep ``value`` exactly, or None: too large for NUMERIC(18,2), more
    than two decimals, or (``double_only``: a SQLite warehouse) more digits than a double keeps."""
    if abs(value) >= LIMIT:
        return "is too large for the warehouse (NUMERIC(18,2): below 10^16)"
    if value != value.quantize(CENT):
        return f"has more than {DECIMALS} decimals: the warehouse would lose them"
    if double_only and not keeps_as_double(value):
        return (
            f"has more digits than a SQLite warehouse keeps exactly ({SQLITE_DIGITS} significant): "
            "amounts this large need a PostgreSQL warehouse"
        )
    return None


def as_hashed(value: Decimal) -> str:
    """The text the content hash has for an amount: the float's repr it had before amounts were
    exact (``1234.5``, ``2.0``), so the hashes of stored orders stay the same; the exact digits
    where a float could not show them."""
    text = str(value)
    as_float = repr(float(text))  # float(value) converts through the same text
    if as_float == text:  # the usual case: the digits are the float's already
        return text
    return as_float if Decimal(as_float) == value else text
