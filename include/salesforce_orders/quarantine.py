"""The validate stage over a whole run: check every staged chunk, quarantine the invalid orders.

Invalid orders are written to ``quarantined_orders`` with the names of the checks they failed
and a message per check; the valid ones are marked for the transform. When the invalid share
passes ``max_invalid_share`` the stage fails before anything is loaded: a renamed field or a
broken org should stop the import, not quarantine everything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa

from .config import ImportConfig
from .progress import Progress
from .readahead import read_ahead
from .validate import (
    InvalidShareExceeded,
    OrderValidator,
    ValidationSummary,
    duplicate_order_numbers,
    held_by_hierarchy,
    masked_keys_of,
    text_limits,
)

log = logging.getLogger(__name__)

# Orders per Great Expectations run. Each run has a fixed cost (about a second for the suite's
# metric graph), while a frame row holds only the checked fields and derived columns (~0.5 kB):
# the staged records themselves are read and dropped chunk by chunk.
VALIDATION_BATCH = 50_000


def validate_run(
    engine: sa.Engine,
    run_id: str,
    config: ImportConfig,
    *,
    today: date | None = None,
    batch_size: int | None = None,
    held_accounts: Mapping[str, str] | None = None,
) -> ValidationSummary:
    """Validate every staged order of the run, quarantine the invalid ones, mark the rest valid.
    ``held_accounts``: the Accounts the extract could not store in ``customers``, with why
    (hierarchy.held_back): the orders under them are quarantined (``hierarchy_storable``)."""
    import pandas as pd

    from .staging import drop_superseded, iter_staged, mark_validation

    schema = config.warehouse_schema
    with engine.begin() as conn:
        superseded = drop_superseded(conn, run_id, schema=schema)
    if superseded:
        log.warning(
            "%d staged orders are older than the versions a later run already loaded: dropped from this run "
            "(they are in the warehouse as that run loaded them), e.g. %s", len(superseded), ", ".join(superseded[:5]),
        )
    order_limits, item_limits = text_limits(config)
    validator = OrderValidator(
        order_limits, today=today, item_limits=item_limits, double_only_amounts=engine.dialect.name == "sqlite"
    )
    summary = ValidationSummary()
    seen_numbers: set[str] = set()
    limit = batch_size or VALIDATION_BATCH
    frames: list[pd.DataFrame] = []
    late_duplicates: list[str] = []  # OrderNumbers already seen in an earlier batch
    held: dict[str, str] = {}  # orders under an Account the extract could not store: why
    masked_keys: dict[str, str] = {}  # orders whose customer id or service number held a card number: why
    pending = 0

    def flush() -> None:
        nonlocal frames, late_duplicates, held, masked_keys, pending
        if pending:
            frame = pd.concat(frames, ignore_index=True)
            _quarantine_batch(engine, run_id, validator, frame, late_duplicates, held, summary, config, masked_keys)
        frames, late_duplicates, held, masked_keys, pending = [], [], {}, {}, 0

    progress = Progress("validate", "orders")
    staged = iter_staged(
        engine, run_id, status=None, chunk_size=min(config.chunk_size, limit), schema=schema, fields=validator.staged_fields()
    )
    for chunk in read_ahead(staged):
        frames.append(validator.frame(chunk))
        late_duplicates += duplicate_order_numbers(chunk, seen_numbers)
        late_duplicates += _numbers_held_by_other_orders(engine, chunk, schema)
        held |= held_by_hierarchy(chunk, held_accounts or {})
        masked_keys |= masked_keys_of(chunk, config.customer_id_field, config.service_number_field)
        pending += len(chunk)
        if pending >= limit:
            flush()
        progress.add(len(chunk), f"{summary.invalid} quarantined")
    flush()
    progress.finish(f"{summary.invalid} quarantined")
    with engine.begin() as conn:
        mark_validation(conn, run_id, {}, schema=schema)  # every order checked and not invalid is valid
    summary.valid = summary.checked - summary.invalid
    summary.superseded = len(superseded)
    log.info("Validated %d orders: %d valid, %d quarantined %s", summary.checked, summary.valid, summary.invalid, summary.failures_by_check)
    # Below invalid_share_min_orders a share means little (1 of 1 is 100 %): those are just quarantined.
    if summary.checked >= config.invalid_share_min_orders and summary.invalid_share > config.max_invalid_share:
        raise InvalidShareExceeded(
            f"{summary.invalid} of {summary.checked} orders ({summary.invalid_share:.0%}) failed validation, more than "
            f"max_invalid_share {config.max_invalid_share:.0%}; nothing was loaded. Failures by check: "
            f"{summary.failures_by_check}. See the quarantined_orders table for each order's reasons."
        )
    return summary


def _numbers_held_by_other_orders(engine: sa.Engine, chunk: list, schema: str | None) -> list[str]:
    """Ids of the chunk's orders whose OrderNumber an active, already imported, other order has: a
    duplicate arriving in a later run is quarantined like one in the same run."""
    from .warehouse.definitions import tables
    from .warehouse.writes import select_in

    numbers = {order.get("OrderNumber"): order.get("Id") for order, _ in chunk if order.get("OrderNumber")}
    o = tables(schema).external_orders
    with engine.connect() as conn:
        held = select_in(conn, o, [o.c.order_number, o.c.sf_order_id], o.c.order_number, sorted(numbers), o.c.sf_state == "active")
    return [numbers[row.order_number] for row in held if row.sf_order_id != numbers[row.order_number]]


def _quarantine_batch(
    engine: sa.Engine,
    run_id: str,
    validator: OrderValidator,
    frame: Any,
    late_duplicates: list[str],
    held: Mapping[str, str],
    summary: ValidationSummary,
    config: ImportConfig,
    masked_keys: Mapping[str, str] | None = None,
) -> None:
    """Run the suite over one batch's frame; quarantine and mark its invalid orders."""
    from .card_masks import queue_card_masks
    from .load import record_quarantine
    from .staging import mark_validation, staged_orders
    from .transform import card_data_masked_fields
    from .warehouse.types import utc_now

    failed: dict[str, list[str]] = {}
    for index, rules in validator.failing_rows(frame).items():
        failed[frame.at[index, "Id"]] = rules
    for order_id in late_duplicates:
        failed.setdefault(order_id, [])
        if "order_number_unique" not in failed[order_id]:
            failed[order_id].append("order_number_unique")
    for order_id in held:
        failed.setdefault(order_id, []).append("hierarchy_storable")
    masked_keys = masked_keys or {}
    for order_id in masked_keys:
        failed.setdefault(order_id, []).append("keys_not_card_numbers")
    schema = config.warehouse_schema
    # Messages need the whole record: only the few invalid orders are read back.
    records = staged_orders(engine, run_id, failed, schema=schema)
    quarantine_rows = []
    for order_id, rules in failed.items():
        order, items = records[order_id]
        details = validator.explain_failures(order, items, rules)
        if order_id in held:  # why is the extract's finding, not the order's own fields
            details["hierarchy_storable"] = held[order_id]
        if order_id in masked_keys:
            details["keys_not_card_numbers"] = masked_keys[order_id]
        quarantine_rows.append(
            {
                "sf_order_id": order_id,
                "order_number": order.get("OrderNumber"),
                "account_name": order.get("Account.Name"),
                "sf_account_id": order.get("AccountId"),
                "failed_checks": rules,
                "details": details,
                "card_data_masked": card_data_masked_fields(order, items, config.order_item_object),
            }
        )
    with engine.begin() as conn:
        mark_validation(conn, run_id, failed, checked_ids=(), schema=schema)
        record_quarantine(conn, run_id, quarantine_rows, schema=schema)
        queue_card_masks(
            conn,
            {order_id: records[order_id][0].get("SystemModstamp") for order_id in failed},
            card_fields=config.card_fields_to_x_out_when_not_imported,
            order_object=config.order_object,
            run_id=run_id,
            now=utc_now(),
            schema=schema,
        )
    summary.checked += len(frame)
    summary.invalid += len(failed)
    for rules in failed.values():
        for rule in rules:
            summary.failures_by_check[rule] = summary.failures_by_check.get(rule, 0) + 1
    for row in quarantine_rows[:20]:
        log.warning("Quarantined order %s (%s): %s", row["sf_order_id"], row["order_number"], "; ".join(row["details"].values()))
