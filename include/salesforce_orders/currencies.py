"""Amounts in the org's corporate currency, converted with the org's own rates.

Salesforce keeps, per currency, units of that currency per one unit of the corporate currency:
``CurrencyType.ConversionRate`` (the current rate) and, with advanced currency management,
``DatedConversionRate`` (a rate per period, ``StartDate`` <= day < ``NextStartDate``). The
extract reads both once a run into the warehouse's ``currency_rates``; the transform converts each
order's total with the dated rate of its ``EffectiveDate`` when there is one, else the current rate.
An org without multi-currency has neither object: every amount is already corporate (rate 1).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from . import amounts
from .amounts import CENT

log = logging.getLogger(__name__)

CURRENT = "CurrencyType"  # currency_rates.source of the current rates
DATED = "DatedConversionRate"  # ... and of the rates by period
FIRST_DAY, LAST_DAY = date(1, 1, 1), date(9999, 12, 31)
# Salesforce's answer when the org has no such object (multi-currency not enabled).
_NOT_IN_ORG = "INVALID_TYPE"
_NO_SUCH_FIELD = "INVALID_FIELD"


@dataclass(frozen=True)
class OrgCurrency:
    """Whether the org has multi-currency (its records carry ``CurrencyIsoCode``) and, when not,
    its one currency (None if it does not say)."""

    multi_currency: bool
    single_currency: str | None = None


@dataclass(frozen=True)
class Conversion:
    corporate_currency: str
    rate: Decimal
    amount: Decimal | None


@dataclass
class CurrencyRates:
    """The org's rates: ``corporate`` is None for a single-currency org (conversion is the identity)."""

    corporate: str | None = None
    current: dict[str, Decimal] = field(default_factory=dict)
    # per currency: period starts (sorted) and the rate of each period, with its end
    dated: dict[str, list[tuple[date, date, Decimal]]] = field(default_factory=dict)

    def rate_for(self, currency: str, day: date | None) -> Decimal | None:
        periods = self.dated.get(currency)
        if periods and day is not None:
            index = bisect_right([start for start, _end, _rate in periods], day) - 1
            if index >= 0 and day < periods[index][1]:
                return periods[index][2]
        return self.current.get(currency)

    def convert(self, amount: Decimal | None, currency: str | None, day: str | None) -> Conversion | None:
        """``amount`` in ``currency`` in the corporate currency with the rate of ``day`` (YYYY-MM-DD),
        rounded half up to the cent; None when the currency has no rate in the org."""
        if currency is None:
            return None
        if self.corporate is None:
            return Conversion(currency, Decimal(1), amount)
        rate = self.rate_for(currency, _day(day))
        if not rate:
            return None
        converted = None if amount is None else (amounts.exact(amount) / rate).quantize(CENT, ROUND_HALF_UP)
        return Conversion(self.corporate, rate, converted)


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def queries() -> list[Any]:
    """The small queries of the org's rates (current, dated), of its currency (Organization) and of
    whether its Orders carry a currency, for ``read_from_salesforce``, ``org_currency`` and
    ``orders_carry_currency``."""
    from .salesforce import Query
    from .soql import (
        build_currency_types_query,
        build_dated_conversion_rates_query,
        build_order_currency_field_query,
        build_organization_currency_query,
    )

    return [
        Query(build_currency_types_query()),
        Query(build_dated_conversion_rates_query()),
        Query(build_organization_currency_query()),
        Query(build_order_currency_field_query()),
    ]


def _answers(hook: Any, pages: list[Iterator[list[dict]]] | None) -> list[Iterator[list[dict]]]:
    """The pages of ``queries()``: as read with other reads, else read here (lazily: a query is
    asked for only when its pages are)."""
    return pages or [hook.iter_query_pages(query.soql) for query in queries()]


def read_from_salesforce(hook: Any, pages: list[Iterator[list[dict]]] | None = None) -> list[dict[str, Any]]:
    """The org's rates as ``currency_rates`` rows; [] for a single-currency org. ``pages``: the
    pages of ``queries()`` when read with other reads (``read_together``), else read here."""
    from .salesforce import SalesforceApiError

    rows: list[dict[str, Any]] = []
    current, dated, _organization, _order_currency = _answers(hook, pages)
    try:
        for page in current:
            rows += [_row(CURRENT, r["IsoCode"], r["ConversionRate"], FIRST_DAY, LAST_DAY, bool(r["IsCorporate"])) for r in page]
    except SalesforceApiError as exc:
        if exc.code != _NOT_IN_ORG:
            raise
        log.info("The org has no CurrencyType (%s): no multi-currency, or the integration user cannot read it", exc.code)
        return []
    try:
        for page in dated:
            rows += [
                _row(DATED, r["IsoCode"], r["ConversionRate"], _day(r["StartDate"]) or FIRST_DAY, _day(r["NextStartDate"]) or LAST_DAY, False)
                for r in page
            ]
    except SalesforceApiError as exc:  # multi-currency without advanced currency management: the current rates
        if exc.code != _NOT_IN_ORG:
            raise
        log.info("The org has no DatedConversionRate (%s): amounts are converted with the current rates", exc.code)
        return [row for row in rows if row["source"] == CURRENT]
    return rows


def orders_carry_currency(hook: Any, pages: list[Iterator[list[dict]]] | None = None) -> bool:
    """Whether the org's Orders have ``CurrencyIsoCode`` (multi-currency is on): what decides
    whether amounts need converting, whatever the rates' objects say. ``pages``: of ``queries()``."""
    from .salesforce import SalesforceApiError

    _current, _dated, _organization, order_currency = _answers(hook, pages)
    try:
        for _page in order_currency:
            pass
    except SalesforceApiError as exc:
        if exc.code != _NO_SUCH_FIELD:
            raise
        return False
    return True


def org_currency(hook: Any, pages: list[Iterator[list[dict]]] | None = None) -> str | None:
    """The currency of a single-currency org (``Organization.DefaultCurrencyIsoCode``), whose
    records have no ``CurrencyIsoCode``: every amount is in it. ``pages``: of ``queries()``, as
    for :func:`read_from_salesforce`. None when the org does not say (the orders' currency is then
    left empty, with a warning)."""
    from .salesforce import SalesforceApiError

    _current, _dated, organization, _order_currency = _answers(hook, pages)
    try:
        records = [record for page in organization for record in page]
    except SalesforceApiError as exc:
        log.warning("The org's currency could not be read (%s): the orders' currency is left empty", exc.code)
        return None
    currency = records[0].get("DefaultCurrencyIsoCode") if records else None
    if not currency:
        log.warning("The org has no DefaultCurrencyIsoCode: the orders' currency is left empty")
    return currency or None


def _row(source: str, code: str, rate: Any, start: date, end: date, corporate: bool) -> dict[str, Any]:
    return {
        "source": source,
        "iso_code": code,
        "start_date": start,
        "next_start_date": end,
        "conversion_rate": amounts.exact(rate),
        "is_corporate": corporate,
    }


def store(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], now: Any) -> None:
    """Replace the warehouse's rates with ``rows`` (the org's, as read this run)."""
    conn.execute(sa.delete(table))
    if rows:
        conn.execute(sa.insert(table), [{**row, "updated_at": now} for row in rows])


def load(conn: sa.Connection, table: sa.Table) -> CurrencyRates:
    """The rates the warehouse holds, ready to convert with."""
    rates = CurrencyRates()
    for row in conn.execute(sa.select(table).order_by(table.c.iso_code, table.c.start_date)):
        rate = amounts.exact(row.conversion_rate)
        if row.source == CURRENT:
            rates.current[row.iso_code] = rate
            if row.is_corporate:
                rates.corporate = row.iso_code
        else:
            rates.dated.setdefault(row.iso_code, []).append((row.start_date, row.next_start_date, rate))
    if rates.corporate is None and rates.current:
        log.warning("The org's currencies name no corporate currency: amounts are not converted")
        return CurrencyRates()
    return rates
