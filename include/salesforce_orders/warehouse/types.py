"""The warehouse's column types and timestamps: UTC-aware datetimes and exact amounts on every dialect.

The same types serve SQLite (the embedded default) and PostgreSQL. Every timestamp is stored and
returned timezone-aware in UTC (:class:`UtcDateTime`); amounts are ``Decimal`` (:class:`Money`);
JSON columns are ``JSONB`` on PostgreSQL (:func:`json_type`) so analysts can query into them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def parse_utc(value: str | datetime) -> datetime:
    """A Salesforce / ISO 8601 timestamp (``...Z``, ``...+0000``, ``...+00:00``) as an aware UTC datetime."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone; Salesforce timestamps are always UTC-qualified")
    return parsed.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------
# Column types
# ---------------------------------------------------------------------------------------


class UtcDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on every dialect.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the UTC wall time is stored
    and the UTC zone put back on read. Naive datetimes are refused: their zone is a guess.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the warehouse stores timezone-aware UTC timestamps")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine:
    """A JSON column's type: ``JSONB`` on PostgreSQL, so analysts can query into it."""
    # none_as_null: Python None is SQL NULL, not the JSON literal null.
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


class Money(sa.types.TypeDecorator):
    """Amounts and quantities: NUMERIC(18,2) (Salesforce's currency precision), ``Decimal`` in Python.

    PostgreSQL stores and returns them exactly. SQLite has no decimal type: its NUMERIC column
    holds the double nearest to the amount, which has at most two decimals, so reading it back
    to the cent gives the amount exactly (up to 15 significant digits); sums are taken in cents
    (:func:`.views.money_sum`). Floats of the pipeline are bound by their shortest repr, not binary noise.
    """

    impl = sa.Numeric(18, 2)
    cache_ok = True
    _CENT = Decimal("0.01")

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        # asdecimal=False on SQLite: the cents are put back here, without SQLAlchemy's float warning
        return dialect.type_descriptor(sa.Numeric(18, 2, asdecimal=dialect.name != "sqlite"))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return float(value)
        return Decimal(repr(value)) if isinstance(value, float) else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):
            return Decimal(repr(value)).quantize(self._CENT)
        return Decimal(value).quantize(self._CENT)


def rate_type() -> sa.Numeric:
    # Salesforce keeps conversion rates to six decimals.
    return sa.Numeric(18, 6, asdecimal=False)


__all__ = ["Money", "UtcDateTime", "json_type", "parse_utc", "rate_type", "utc_now"]
