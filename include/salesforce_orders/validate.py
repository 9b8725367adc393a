"""Validation of staged orders with Great Expectations, and quarantine of the invalid ones.

Each staged chunk becomes a DataFrame with one row per order: the raw fields plus derived
columns (item count, sum of products, service address after the billing fallback, resolved
country code, ...). One expectation suite, each expectation tagged with the check's name in
``meta["rule"]``, runs over it; ``unexpected_index_list`` gives the failing rows per check, so
every invalid order is quarantined with the names of every check it failed and a message that
names the field and the offending value. Card fields are never selected, so they cannot reach a
message.

Great Expectations is imported lazily (it costs seconds and ~155 MB): never at DAG parse time.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import reduce
from itertools import accumulate, chain, repeat
from typing import Any

from . import amounts
from .amounts import exact
from .model import (
    CARD_DATA_MASKED,
    SERVICE_ADDRESS_FIELDS,
    FieldReader,
    StagedItem,
    StagedOrder,
    as_written,
    matched,
    record_maker,
)

log = logging.getLogger(__name__)

# The checks, by name: what each one means (shown in docs, quarantine and the UI).
CHECKS: dict[str, str] = {
    "order_id_present": "the order has a Salesforce Id",
    "order_number_present": "the order has an OrderNumber",
    "order_number_unique": "no other order in the run has the same OrderNumber",
    "account_present": "the order has an Account (AccountId and Account.Name)",
    "status_activated": "the order's status is in the Activated category",
    "activated_date_valid": "ActivatedDate is present, a valid dateTime and not in the future",
    "effective_date_valid": "EffectiveDate is a valid date, not before 2000 nor more than a year ahead",
    "total_non_negative": "TotalAmount is present and not negative",
    "total_matches_products": "TotalAmount equals the sum of the products' TotalPrice",
    "has_products": "the order has at least one product",
    "quantities_positive": "every product's Quantity is greater than 0",
    "unit_prices_non_negative": "no product has a negative UnitPrice",
    "service_address_complete": "the service address (Shipping, else Billing) has street, city, postal code and country",
    "country_resolvable": "the service and billing countries resolve to ISO country codes",
    "field_lengths": "no text value is longer than its warehouse column",
    "amounts_storable": "every amount and quantity fits the warehouse's NUMERIC(18,2) exactly: at most 2 decimals, below 10^16 (on SQLite, at most the 15 significant digits a double keeps)",
    "hierarchy_storable": "the warehouse can store the order's Account and every Account above it (each value within its column)",
    "keys_not_card_numbers": "no key the warehouse keeps held a card number: the customer id of the order's Account and of its parent (customer_id_field), its products' service numbers (service_number_field)",
}

MAX_FUTURE_EFFECTIVE_DAYS = 365
EARLIEST_EFFECTIVE_DATE = date(2000, 1, 1)
TOTAL_TOLERANCE = 0.005


@dataclass
class ChunkResult:
    """Failed checks per order Id, and a message per (order, check)."""

    failures: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, order_id: str, check: str, message: str) -> None:
        checks = self.failures.setdefault(order_id, [])
        if check not in checks:
            checks.append(check)
        self.details.setdefault(order_id, {})[check] = message


def _shown(value: Any) -> str:
    """A value in a message: text quoted, a number as its digits."""
    return str(value) if isinstance(value, Decimal) else repr(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value))


def _parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":  # +0000 -> +00:00
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class DerivedOrder:
    """What the checks need of one order beyond its raw fields."""

    item_count: int
    items_total: Decimal | None
    min_quantity: Decimal | None
    min_unit_price: Decimal | None
    service: dict[str, str | None]
    service_source: str
    service_country_code: str | None
    billing_country_code: str | None
    activated_ok: bool
    effective_problem: str | None
    amount_problems: tuple[str, ...] = ()


def derive(order: StagedOrder, items: list[StagedItem], today: date, *, double_only: bool = False) -> DerivedOrder:
    """``double_only``: the warehouse keeps amounts as doubles (SQLite)."""
    from .transform import resolve_country_code, service_address_of

    address, source = service_address_of(_SERVICE_ADDRESS(order))
    effective, billing_country, activated, total = _ORDER_VALUES(order)
    item_values = _ITEM_VALUES.many(items)
    prices = [exact(values[0]) for values in item_values]
    quantities = [exact(values[1]) for values in item_values]
    unit_prices = [exact(values[2]) for values in item_values]
    return _make_derived(
        len(items),
        None if any(p is None for p in prices) else amounts.total(prices),
        min((q if q is not None else -math.inf) for q in quantities) if items else None,
        min((p if p is not None else -math.inf) for p in unit_prices) if items else None,
        {
            "street": address.street,
            "city": address.city,
            "postal_code": address.postal_code,
            "country": address.country,
        },
        source,
        address.country_code,
        None if _blank(billing_country) else resolve_country_code(billing_country),
        _activated_ok(activated, today),
        _effective_problem(effective, today),
        _amount_problems(total, item_values, double_only=double_only),
    )


_make_derived = record_maker(DerivedOrder)
_SERVICE_ADDRESS = FieldReader(SERVICE_ADDRESS_FIELDS)
_SERVICE_KEYS = FieldReader([*SERVICE_ADDRESS_FIELDS, ("BillingCountry", False)])  # what _service_checks reads
_ORDER_VALUES = FieldReader(as_written("EffectiveDate", "BillingCountry", "ActivatedDate", "TotalAmount"))
# TotalPrice, then every amount the warehouse stores of an item (as the transform reads them), then Id
_ITEM_VALUES = FieldReader(
    [*as_written("TotalPrice", "Quantity", "UnitPrice", "TotalPrice", "ListPrice"), *matched("PricebookEntry.UnitPrice"), *as_written("Id")]
)
# Days repeat across a run's orders: the EffectiveDate problem of each text, by the day of the check.
_EFFECTIVE_PROBLEMS: dict[tuple[str, date], str | None] = {}


def _effective_problem(effective: Any, today: date) -> str | None:
    key = (effective, today)
    if type(effective) is str and key in _EFFECTIVE_PROBLEMS:
        return _EFFECTIVE_PROBLEMS[key]
    effective_date = _parse_date(effective)
    if _blank(effective):
        problem = "EffectiveDate is missing"
    elif effective_date is None:
        problem = f"EffectiveDate {effective!r} is not a valid date (YYYY-MM-DD)"
    elif effective_date < EARLIEST_EFFECTIVE_DATE:
        problem = f"EffectiveDate {effective} is before {EARLIEST_EFFECTIVE_DATE}"
    elif effective_date > today + timedelta(days=MAX_FUTURE_EFFECTIVE_DAYS):
        problem = f"EffectiveDate {effective} is more than {MAX_FUTURE_EFFECTIVE_DAYS} days in the future"
    else:
        problem = None
    if type(effective) is str:
        if len(_EFFECTIVE_PROBLEMS) >= 100_000:
            _EFFECTIVE_PROBLEMS.clear()
        _EFFECTIVE_PROBLEMS[key] = problem
    return problem


# Each item amount that reaches a Money column: external_order_items (quantity, unit_price,
# total_price, list_price) and products.list_price (PricebookEntry.UnitPrice). As _ITEM_VALUES reads them.
_AMOUNT_NAMES = ("Quantity", "UnitPrice", "TotalPrice", "ListPrice", "PricebookEntry.UnitPrice")


def _amount_problems(total: Any, item_values: list[tuple[Any, ...]], *, double_only: bool) -> tuple[str, ...]:
    """Amounts the warehouse cannot keep exactly, each with the field that holds it: TotalAmount,
    then each item's _AMOUNT_NAMES (``item_values``: as _ITEM_VALUES reads them)."""
    fine = _FINE_AMOUNTS[double_only]
    if all(type(raw) is Decimal and raw in fine for raw in (total, *[raw for values in item_values for raw in values[1:-1]])):
        return ()  # (the usual case: every amount already seen to fit)
    problems = []
    found = _amount_problem(total, double_only)
    if found:
        problems.append(f"TotalAmount {total} {found}")
    for _, *raw_values, item_id in item_values:
        for name, raw in zip(_AMOUNT_NAMES, raw_values, strict=True):
            found = _amount_problem(raw, double_only)
            if found:
                problems.append(f"{name} of OrderItem {item_id} {raw} {found}")
    return tuple(problems)


# An amount's problem depends on its value alone: the amounts that fit are remembered by value
# (amounts repeat), for a double-only warehouse and for the other.
_FINE_AMOUNTS: tuple[set[Decimal], set[Decimal]] = (set(), set())


def _amount_problem(raw: Any, double_only: bool) -> str | None:
    value = exact(raw)
    if value is None:
        return None
    fine = _FINE_AMOUNTS[double_only]
    if value in fine:
        return None
    problem = amounts.problem(value, double_only=double_only)
    if problem is None:
        if len(fine) >= 100_000:
            fine.clear()
        fine.add(value)
    return problem


def text_limits(config: Any) -> tuple[dict[str, int], dict[str, int]]:
    """The lengths of the warehouse's text columns, by the staged field each is read from, as the
    config names them (its ``customer_id_field`` and ``service_number_field`` may point at longer
    fields than the defaults): (order fields, order product fields)."""
    from .warehouse.definitions import COLUMN_LIMITS, CUSTOMER_ID_LENGTH, ITEM_COLUMN_LIMITS

    orders = {name: limit for name, limit in COLUMN_LIMITS.items() if name not in ("Account.Customer_ID__c",)}
    # an Account's own customer id is kept; a parent's only when it has none of its own in the warehouse
    orders[f"Account.{config.customer_id_field}"] = CUSTOMER_ID_LENGTH
    orders[f"Account.Parent.{config.customer_id_field}"] = CUSTOMER_ID_LENGTH
    items = {name: limit for name, limit in ITEM_COLUMN_LIMITS.items() if name != "Service_Number__c"}
    items[config.service_number_field] = ITEM_COLUMN_LIMITS["Service_Number__c"]
    return orders, items


def _field(record: StagedOrder | StagedItem, name: str) -> Any:
    """``record[name]`` (a flat, dotted name), matched case-insensitively as Salesforce names are:
    the config may spell a field otherwise than the org's answers do."""
    if name in record:
        return record[name]
    lowered = name.lower()
    return next((value for key, value in record.items() if key.lower() == lowered), None)


def _in_the_future(moment: datetime, today: date) -> bool:
    """Later than the end of tomorrow: beyond any time zone or clock skew, not yet happened."""
    return moment.date() > today + timedelta(days=1)


def _activated_ok(activated: Any, today: date) -> bool:
    """ActivatedDate is a valid dateTime that has happened."""
    parsed = _parse_datetime(activated)
    return parsed is not None and not _in_the_future(parsed, today)


class OrderValidator:
    """Builds the Great Expectations suite once and validates chunk after chunk."""

    def __init__(
        self,
        column_limits: dict[str, int],
        today: date | None = None,
        item_limits: dict[str, int] | None = None,
        *,
        double_only_amounts: bool = False,
    ):
        """``double_only_amounts``: the warehouse keeps amounts as doubles (SQLite), so an amount
        with more digits than a double keeps is refused rather than rounded."""
        self.column_limits = dict(column_limits)
        self.item_limits = dict(item_limits or {})
        self.today = today or date.today()
        self.double_only_amounts = double_only_amounts
        self._order_columns, self._item_columns = tuple(self.column_limits.items()), tuple(self.item_limits.items())
        self._order_texts = FieldReader(matched(*self.column_limits))
        self._item_texts = FieldReader(matched(*self.item_limits))
        self._validation = self._build()

    def _build(self) -> Any:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.core.validation_definition import ValidationDefinition
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (
            context.data_sources.add_pandas("staged_orders")
            .add_dataframe_asset("orders")
            .add_batch_definition_whole_dataframe("chunk")
        )
        suite = context.suites.add(gx.ExpectationSuite(name="salesforce_orders"))

        def expect(expectation_cls: Callable[..., Any], rule: str, **kwargs: Any) -> None:
            suite.add_expectation(expectation_cls(meta={"rule": rule}, **kwargs))

        expect(gxe.ExpectColumnValuesToNotBeNull, "order_id_present", column="Id")
        expect(gxe.ExpectColumnValuesToNotBeNull, "order_number_present", column="OrderNumber")
        expect(gxe.ExpectColumnValuesToBeUnique, "order_number_unique", column="OrderNumber")
        expect(gxe.ExpectColumnValuesToBeInSet, "account_present", column="_account_ok", value_set=[True])
        expect(gxe.ExpectColumnValuesToBeInSet, "status_activated", column="StatusCode", value_set=["Activated"])
        expect(gxe.ExpectColumnValuesToBeInSet, "activated_date_valid", column="_activated_ok", value_set=[True])
        expect(gxe.ExpectColumnValuesToBeInSet, "effective_date_valid", column="_effective_ok", value_set=[True])
        expect(gxe.ExpectColumnValuesToBeInSet, "total_non_negative", column="_total_ok", value_set=[True])
        expect(gxe.ExpectColumnValuesToBeBetween, "total_matches_products", column="_total_mismatch", max_value=TOTAL_TOLERANCE)
        expect(gxe.ExpectColumnValuesToBeBetween, "has_products", column="_item_count", min_value=1)
        expect(gxe.ExpectColumnValuesToBeBetween, "quantities_positive", column="_min_quantity", min_value=0, strict_min=True)
        expect(gxe.ExpectColumnValuesToBeBetween, "unit_prices_non_negative", column="_min_unit_price", min_value=0)
        expect(gxe.ExpectColumnValuesToBeInSet, "service_address_complete", column="_service_complete", value_set=[True])
        expect(gxe.ExpectColumnValuesToBeInSet, "country_resolvable", column="_countries_ok", value_set=[True])
        # One expectation per check, over a derived column where the check reads several (not
        # one per column): each expectation costs Great Expectations a fixed overhead per run
        # (most of a run's time), and there are some thirty text columns.
        expect(gxe.ExpectColumnValuesToBeBetween, "field_lengths", column="_overlong_fields", max_value=0)
        expect(gxe.ExpectColumnValuesToBeBetween, "amounts_storable", column="_amount_problems", max_value=0)
        return context.validation_definitions.add(ValidationDefinition(name="staged_orders", data=batch, suite=suite))

    def staged_fields(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The fields of staged orders and of their items that :meth:`frame` reads (and
        :func:`duplicate_order_numbers`, :func:`held_by_hierarchy`, :func:`masked_keys_of`): (order fields, item
        fields), as written."""
        orders = (_FRAME_VALUES, _ORDER_VALUES, _SERVICE_KEYS, self._order_texts, _HIERARCHY_VALUES, _MASKED_VALUES)
        return _names(*orders), _names(_ITEM_VALUES, self._item_texts, _MASKED_VALUES)

    def overlong(self, order: StagedOrder, items: Iterable[StagedItem] = ()) -> list[tuple[str, int, int]]:
        """The text fields of the order and its products longer than their warehouse column:
        (field, length, limit)."""
        found = _too_long(self._order_columns, self._order_texts(order))
        if self._item_columns:
            items = items if isinstance(items, list) else list(items)
            found += [
                (f"OrderItem {items[position].get('Id')} {column}", length, limit)
                for position, values in enumerate(self._item_texts.many(items))
                for column, length, limit in _too_long(self._item_columns, values)
            ]
        return found

    def frame(self, chunk: list[tuple[StagedOrder, list[StagedItem]]]) -> Any:
        """One row per order: the raw fields the suite checks and the derived check columns.

        Built column by column over the whole chunk, not order by order: each column is read from
        the records in one step, and the costly checks are made in C where the values allow (a
        column of text within its limits) or once per distinct value (amounts, addresses), with
        per-row Python left for the rare rows that need it. Each column holds what :func:`derive`
        gives the messages for the same order."""
        import pandas as pd

        if not chunk:
            return pd.DataFrame()
        orders = [order for order, _ in chunk]
        item_lists = [items for _, items in chunk]
        item_counts = list(map(len, item_lists))
        items = list(chain.from_iterable(item_lists))
        effective, billing_country, activated, total_raw = _columns(_ORDER_VALUES.many(orders), 4)
        totals = list(map(exact, total_raw))
        item_values = _ITEM_VALUES.many(items)  # (TotalPrice, *_AMOUNT_NAMES, Id)
        price_raw, quantity_raw, unit_price_raw, _, list_price_raw, pricebook_price_raw, _ = _columns(item_values, 7)
        products = _ProductColumns(totals, item_counts, *map(_exact_column, (price_raw, quantity_raw, unit_price_raw)))
        service = _columns(_service_columns(_SERVICE_KEYS.many(orders)), 5)
        today = self.today
        if _amounts_fit(self.double_only_amounts, total_raw, quantity_raw, unit_price_raw, price_raw, list_price_raw, pricebook_price_raw):
            amount_problems = [0] * len(chunk)  # (the usual case)
        else:
            amount_problems = [
                len(_amount_problems(total, item_values[start:end], double_only=self.double_only_amounts))
                for total, start, end in zip(total_raw, products.starts, products.ends, strict=True)
            ]
        columns: dict[str, Any] = {
            **dict(zip(FRAME_FIELDS, _columns(_FRAME_VALUES.many(orders), len(FRAME_FIELDS)), strict=True)),
            "_activated_ok": [_activated_ok(value, today) for value in activated],
            "_effective_ok": [_effective_problem(value, today) is None for value in effective],
            "_total": _floats(totals),
            "_total_mismatch": products.mismatches(),
            "_item_count": item_counts,
            # no products: reported by has_products only
            "_min_quantity": products.minima(products.quantities, 1.0),
            "_min_unit_price": products.minima(products.unit_prices, 0.0),
            **dict(zip(_SERVICE_COLUMNS, service[:4], strict=True)),
            "_countries_ok": service[4],
            "_overlong_fields": self._overlong_counts(orders, items, item_counts),
            "_amount_problems": amount_problems,
        }
        frame = pd.DataFrame(
            {name: pd.Series(values, dtype=_FRAME_DTYPES.get(name, object)) for name, values in columns.items()},
            columns=_FRAME_COLUMNS,
        )
        # Checks over several columns, as the columns' own NotBeNull and Between would find them
        # (nulls as pandas has them).
        frame["_account_ok"] = _none_null(frame, "AccountId", "Account.Name")
        frame["_total_ok"] = frame["_total"] >= 0  # (NaN: missing, not >= 0)
        frame["_service_complete"] = _none_null(frame, *_SERVICE_COLUMNS)
        return frame

    def _overlong_counts(self, orders: list[StagedOrder], items: list[StagedItem], item_counts: list[int]) -> list[int]:
        """len(overlong(order, items)) of each order: its text values and its products' longer
        than their column, counted column by column."""
        counts = [0] * len(orders)
        for position in _overlong_rows(self._order_columns, self._order_texts.many(orders)):
            counts[position] += 1
        if self._item_columns and items:
            overlong_items = list(_overlong_rows(self._item_columns, self._item_texts.many(items)))
            if overlong_items:
                owners = list(chain.from_iterable(repeat(order, count) for order, count in enumerate(item_counts)))
                for position in overlong_items:
                    counts[owners[position]] += 1
        return counts

    def failing_rows(self, frame: Any) -> dict[int, list[str]]:
        """Run the suite over a frame: the failed checks of each failing row, by row position."""
        failing: dict[int, list[str]] = {}
        if frame.empty:
            return failing
        run = self._validation.run(
            batch_parameters={"dataframe": frame.reset_index(drop=True)},
            result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
        )
        for outcome in run.results:
            if outcome.success:
                continue
            rule = outcome.expectation_config.meta["rule"]
            for index in outcome.result.get("unexpected_index_list") or []:
                rules = failing.setdefault(int(index), [])
                if rule not in rules:
                    rules.append(rule)
        return failing

    def explain_failures(self, order: StagedOrder, items: list[StagedItem], rules: Iterable[str]) -> dict[str, str]:
        """A message per failed check of one order, naming the field and the offending value."""
        derived = derive(order, items, self.today, double_only=self.double_only_amounts)
        return {rule: explain(rule, order, items, derived, self.overlong(order, items)) for rule in rules}

    def validate(self, chunk: list[tuple[StagedOrder, list[StagedItem]]]) -> ChunkResult:
        result = ChunkResult()
        for index, rules in self.failing_rows(self.frame(chunk)).items():
            order, items = chunk[index]
            order_id = order.get("Id") or f"(row {index})"
            for rule, message in self.explain_failures(order, items, rules).items():
                result.add(order_id, rule, message)
        return result


# The raw fields the suite checks directly; the rest of the frame is derived.
FRAME_FIELDS = ("Id", "OrderNumber", "AccountId", "Account.Name", "StatusCode")
_FRAME_VALUES = FieldReader(as_written(*FRAME_FIELDS))
_SERVICE_COLUMNS = tuple(f"_service_{part}" for part in ("street", "city", "postal_code", "country"))  # as DerivedOrder.service
_FRAME_COLUMNS = (
    *FRAME_FIELDS,
    "_activated_ok",
    "_effective_ok",
    "_total",
    "_total_mismatch",
    "_item_count",
    "_min_quantity",
    "_min_unit_price",
    *_SERVICE_COLUMNS,
    "_countries_ok",
    "_overlong_fields",
    "_amount_problems",
)
# The frame's columns that are not objects (every other column is).
_FRAME_DTYPES = dict.fromkeys(("_total", "_total_mismatch", "_min_quantity", "_min_unit_price"), "float64") | dict.fromkeys(
    ("_item_count", "_overlong_fields", "_amount_problems"), "int64"
)


def _names(*readers: FieldReader) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for reader in readers for name, _ in reader.fields))


def _none_null(frame: Any, *columns: str) -> Any:
    """Whether each row has a value in every one of ``columns`` (null as pandas has it)."""
    return reduce(operator.and_, (frame[column].notna() for column in columns))


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Rows of ``width`` values as ``width`` columns (empty ones when there are no rows)."""
    return list(zip(*rows, strict=True)) or [()] * width


def _floats(values: Iterable[Decimal | None]) -> list[float]:
    """Amounts as the frame's float columns hold them: NaN for None."""
    return [math.nan if value is None else float(value) for value in values]


class _ProductColumns:
    """The per-order sums and minima of the products' amounts, from the chunk's products in one
    list (``item_counts`` of them per order, in order)."""

    def __init__(
        self,
        totals: list[Decimal | None],
        item_counts: list[int],
        prices: Sequence[Decimal | None],
        quantities: Sequence[Decimal | None],
        unit_prices: Sequence[Decimal | None],
    ):
        self.totals, self.prices, self.quantities, self.unit_prices = totals, prices, quantities, unit_prices
        self.ends = list(accumulate(item_counts))
        self.starts = [0, *self.ends[:-1]]

    def mismatches(self) -> list[float]:
        """|TotalAmount - the sum of the products' TotalPrice|; infinite when either is missing."""
        found = []
        gaps = _has_none(self.prices)
        for total, start, end in zip(self.totals, self.starts, self.ends, strict=True):
            prices = self.prices[start:end]
            if total is None or (gaps and _has_none(prices)):
                found.append(math.inf)
            else:
                found.append(float(abs(total - amounts.total(prices))))
        return found

    def minima(self, values: Sequence[Decimal | None], no_products: float) -> list[float]:
        """The least of each order's values (-inf when one is missing); ``no_products`` for an
        order without products. (float() keeps order, so the float of the least is the least float.)"""
        gaps = _has_none(values)
        least = []
        for start, end in zip(self.starts, self.ends, strict=True):
            some = values[start:end]
            least.append(no_products if start == end else -math.inf if gaps and _has_none(some) else float(min(some)))
        return least


def _has_none(values: Iterable[Any]) -> bool:
    """``None in values`` by type: ``in`` compares None with each Decimal by ==, which costs an
    isinstance check against numbers.Rational (an ABC) per value."""
    return type(None) in set(map(type, values))


# An order's service address columns depend on its address fields and BillingCountry alone, and
# these repeat (a customer's orders share them): each set's columns, worked out once.
_SERVICE_CHECKS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _service_columns(keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """:func:`_service_checks` of each key, those already worked out found in one step when every
    value is text or None (the usual case)."""
    if not set(map(type, chain.from_iterable(keys))) <= _TEXT_OR_NONE:
        return list(map(_service_checks, keys))
    found = list(map(_SERVICE_CHECKS.get, keys))
    if None in found:
        found = [_service_checks(key) if checks is None else checks for key, checks in zip(keys, found, strict=True)]
    return found


def _service_checks(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The frame's service address parts (street, city, postal code, country; None where blank)
    and whether the service and billing countries resolve, from ``key``: the values
    SERVICE_ADDRESS_FIELDS reads, then BillingCountry."""
    *address_values, billing_country = key
    # Only text and None are remembered: other values can be equal keys that read differently
    # (True == 1, 1 == 1.0), and some cannot be keys at all.
    remembered = set(map(type, key)) <= _TEXT_OR_NONE
    checks = _SERVICE_CHECKS.get(key) if remembered else None
    if checks is not None:
        return checks
    from .transform import resolve_country_code, service_address_of

    address, _ = service_address_of(address_values)
    countries_ok = (address.country is None or address.country_code is not None) and (
        _blank(billing_country) or resolve_country_code(billing_country) is not None
    )
    parts = (address.street, address.city, address.postal_code, address.country)  # as DerivedOrder.service
    checks = (*[None if _blank(value) else value for value in parts], countries_ok)
    if remembered:
        if len(_SERVICE_CHECKS) >= 100_000:
            _SERVICE_CHECKS.clear()
        _SERVICE_CHECKS[key] = checks
    return checks


def _exact_column(values: tuple[Any, ...]) -> Sequence[Decimal | None]:
    """exact() of each value: a column of finite Decimals (the usual one) as it is."""
    if set(map(type, values)) <= {Decimal} and all(map(Decimal.is_finite, values)):
        return values
    return list(map(exact, values))


# Amounts whose problem is their value's (exact() of an int is its value): a column of these is
# checked value by value, once per distinct value. (True == 1 and 0.5 == Decimal("0.5") read
# otherwise, so booleans, floats and text are not.)
_AMOUNTS_BY_VALUE = frozenset({Decimal, int, type(None)})


def _amounts_fit(double_only: bool, *columns: tuple[Any, ...]) -> bool:
    """Whether the warehouse keeps every amount of these columns exactly, when that can be told
    from their distinct values (nearly always): each value not already seen to fit is checked
    once, however many times it occurs. False: some amount has a problem, or some value has to be
    checked where it occurs."""
    if not set(map(type, chain(*columns))) <= _AMOUNTS_BY_VALUE:
        return False
    # Distinct by their text (a Decimal's or an int's str() tells its value): hashing a Decimal
    # the first time costs three times writing its text (some 0.3 µs), for every amount of a chunk.
    fine = _FINE_AMOUNT_TEXTS[double_only]
    try:
        unseen = set(map(str, chain(*columns))) - fine
    except ValueError:  # an int of more digits than str() writes: checked where it occurs
        return False
    unseen.discard(str(None))
    # every one checked (no all()): each that fits is remembered as it is checked
    problems = [text for text in unseen if _amount_problem(Decimal(text), double_only) is not None]
    if len(fine) + len(unseen) > 100_000:
        fine.clear()
    fine.update(unseen.difference(problems))
    return not problems


# The amounts _amounts_fit has seen to fit, by their text.
_FINE_AMOUNT_TEXTS: tuple[set[str], set[str]] = (set(), set())


_TEXT_OR_NONE = frozenset({str, type(None)})


def _overlong_rows(limits: Sequence[tuple[str, int]], rows: list[tuple[Any, ...]]) -> Iterator[int]:
    """The position of the row for each value longer than its limit (as _too_long measures them),
    ``rows`` holding a value per limit. A column of text and None within its limit (nearly every
    column) is passed over in C."""
    for (_, limit), values in zip(limits, _columns(rows, len(limits)), strict=True):
        if set(map(type, values)) <= _TEXT_OR_NONE and max(map(len, filter(None, values)), default=0) <= limit:
            continue
        yield from (position for position, value in enumerate(values) if _overlong_length(value, limit) is not None)


def _too_long(limits: Iterable[tuple[str, int]], values: Iterable[Any]) -> list[tuple[str, int, int]]:
    """(field, length, limit) of the values longer than their limit once trimmed (the warehouse
    keeps them trimmed). Text no longer than its limit is passed over without trimming."""
    return [
        (column, length, limit)
        for (column, limit), value in zip(limits, values, strict=True)
        if (length := _overlong_length(value, limit)) is not None
    ]


def _overlong_length(value: Any, limit: int) -> int | None:
    """The length of ``value`` once trimmed, when longer than ``limit``; else None."""
    if value is None or (type(value) is str and len(value) <= limit):
        return None
    length = len(_as_text(value).strip())
    return length if length > limit else None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def explain(
    rule: str,
    order: StagedOrder,
    items: list[StagedItem],
    derived: DerivedOrder,
    overlong: list[tuple[str, int, int]],
) -> str:
    """A message for one failed check that names the field and the offending value."""
    if rule == "order_id_present":
        return "Id is missing"
    if rule == "order_number_present":
        return "OrderNumber is missing"
    if rule == "order_number_unique":
        return f"OrderNumber {order.get('OrderNumber')!r} appears on more than one order"
    if rule == "account_present":
        return "AccountId is missing" if _blank(order.get("AccountId")) else "Account.Name is missing"
    if rule == "status_activated":
        return f"StatusCode is {order.get('StatusCode')!r}, expected 'Activated'"
    if rule == "activated_date_valid":
        value = order.get("ActivatedDate")
        if _blank(value):
            return "ActivatedDate is missing"
        if _parse_datetime(value) is not None:
            return f"ActivatedDate {value!r} is in the future"
        return f"ActivatedDate {value!r} is not a valid dateTime"
    if rule == "effective_date_valid":
        return derived.effective_problem or "EffectiveDate is not valid"
    if rule == "total_non_negative":
        value = order.get("TotalAmount")
        return "TotalAmount is missing" if exact(value) is None else f"TotalAmount {value} is negative"
    if rule == "total_matches_products":
        return (
            f"TotalAmount {order.get('TotalAmount')} differs from the sum of its products' TotalPrice "
            f"({derived.items_total if derived.items_total is not None else 'a TotalPrice is missing'})"
        )
    if rule == "has_products":
        return "the order has no products"
    if rule == "quantities_positive":
        bad = [i for i in items if (exact(i.get("Quantity")) or 0) <= 0]
        return "; ".join(f"OrderItem {i.get('Id')} Quantity {_shown(i.get('Quantity'))} is not greater than 0" for i in bad[:5])
    if rule == "unit_prices_non_negative":
        bad = [i for i in items if exact(i.get("UnitPrice")) is None or exact(i.get("UnitPrice")) < 0]
        return "; ".join(f"OrderItem {i.get('Id')} UnitPrice {_shown(i.get('UnitPrice'))} is negative or missing" for i in bad[:5])
    if rule == "service_address_complete":
        prefix = "Shipping" if derived.service_source == "shipping" else "Billing"
        names = {"street": "Street", "city": "City", "postal_code": "PostalCode", "country": "Country"}
        missing = [f"{prefix}{names[k]}" for k, v in derived.service.items() if _blank(v)]
        return f"service address (from {prefix}) is missing {', '.join(missing)}"
    if rule == "country_resolvable":
        problems = []
        if derived.service["country"] is not None and derived.service_country_code is None:
            problems.append(f"{'Shipping' if derived.service_source == 'shipping' else 'Billing'}Country {derived.service['country']!r}")
        if not _blank(order.get("BillingCountry")) and derived.billing_country_code is None:
            problems.append(f"BillingCountry {order.get('BillingCountry')!r}")
        return f"{' and '.join(dict.fromkeys(problems))} is not a recognisable country"
    if rule == "field_lengths" and overlong:
        masked = set(order.get(CARD_DATA_MASKED) or ())
        return "; ".join(
            f"{column} is {length} characters, more than the {limit} allowed"
            # the mask ([card ending 1111], [security code]) is longer than what it replaced: Salesforce's value may fit
            + (" once the card data in it was masked: remove the card data in Salesforce" if column in masked else "")
            for column, length, limit in overlong
        )
    if rule == "amounts_storable" and derived.amount_problems:
        return "; ".join(derived.amount_problems)
    return CHECKS.get(rule, rule)


@dataclass
class ValidationSummary:
    checked: int = 0
    valid: int = 0
    invalid: int = 0
    superseded: int = 0  # staged versions older than the warehouse's, dropped unvalidated
    failures_by_check: dict[str, int] = field(default_factory=dict)

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.checked if self.checked else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "valid": self.valid,
            "invalid": self.invalid,
            "invalid_share": round(self.invalid_share, 4),
            "superseded": self.superseded,
            "failures_by_check": dict(sorted(self.failures_by_check.items())),
        }


class InvalidShareExceeded(RuntimeError):
    """Too many invalid orders: likely a renamed field or a broken org, so nothing is loaded."""


def held_by_hierarchy(chunk: Iterable[tuple[StagedOrder, list[StagedItem]]], held_accounts: Mapping[str, str]) -> dict[str, str]:
    """The orders whose Account, or its parent, the extract held back from ``customers`` (the
    warehouse cannot store it or an Account above it: hierarchy.held_back), with why, by order Id.
    Loaded, such an order would point at a customer that is not there. (The parent is held when any
    Account above it is, so the order's Account and its parent tell of the whole chain.)"""
    if not held_accounts:
        return {}
    found = {}
    for order_id, account_id, parent_id in _HIERARCHY_VALUES.many([order for order, _ in chunk]):
        reason = held_accounts.get(account_id) or held_accounts.get(parent_id)
        if reason and order_id:
            found[order_id] = f"the order's Account {account_id} is in a hierarchy the warehouse cannot store: {reason}"
    return found


_HIERARCHY_VALUES = FieldReader([*as_written("Id", "AccountId"), *matched("Account.ParentId")])
_MASKED_VALUES = FieldReader(as_written(CARD_DATA_MASKED))


def masked_keys_of(
    chunk: Iterable[tuple[StagedOrder, list[StagedItem]]], customer_id_field: str, service_number_field: str
) -> dict[str, str]:
    """The orders whose Account's (or its parent's) customer id, or a product's service number,
    held a card number, with why, by order Id. The extract masked it (``[card ending 1111]``), and
    each is a key in the warehouse: the customer id of ``customers``, the service number of the
    order's services. Masked, different values ending in the same four digits would be one key
    (the second Account's orders refused as a duplicate key or filed under the first; two services
    of an order made one). Names the record and the field, never the value."""
    wanted = {f"account.{customer_id_field}".lower(), f"account.parent.{customer_id_field}".lower()}
    service = service_number_field.lower()
    found = {}
    for order, items in chunk:
        problems = [
            f"{name} held a card number (masked to its last four digits): it is the customer's key in the warehouse, "
            "so the order cannot be filed under its customer"
            for name in order.get(CARD_DATA_MASKED) or ()
            if isinstance(name, str) and name.lower() in wanted
        ] + [
            f"OrderItem {item.get('Id')} {name} held a card number (masked to its last four digits): it is the key of "
            "the product's service in the warehouse"
            for item in items
            for name in item.get(CARD_DATA_MASKED) or ()
            if isinstance(name, str) and name.lower() == service
        ]
        if problems and order.get("Id"):
            found[order["Id"]] = "; ".join(problems) + "; correct it in Salesforce, then re-sync the order"
    return found


def duplicate_order_numbers(chunk: Iterable[tuple[StagedOrder, list[StagedItem]]], seen: set[str]) -> list[str]:
    """Ids of orders whose OrderNumber was already seen in an earlier chunk of the run."""
    duplicates = []
    for order, _ in chunk:
        number = order.get("OrderNumber")
        if not number:
            continue
        if number in seen:
            duplicates.append(order.get("Id"))
        seen.add(number)
    return duplicates
