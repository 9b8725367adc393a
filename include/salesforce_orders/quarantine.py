"""The validate stage over a whole run: check every staged chunk, quarantine the invalid orders.

Invalid orders are written to ``quarantined_orders`` with the names of the checks they failed
and a message per check; the valid ones are marked for the transform. When the invalid share
passes ``max_invalid_share`` the stage fails before anything is loaded: a renamed field or a
broken org should stop the import, not quarantine everything.
"""

from __future__ import annotations

import logging
from datetime import date

import sqlalchemy as sa

from .config import ImportConfig
from .validate import InvalidShareExceeded, OrderValidator, ValidationSummary, duplicate_order_numbers

log = logging.getLogger(__name__)

# Orders per Great Expectations run: each run has a fixed cost (~0.5 s for the suite), so
# validating 10,000 orders at a time is several times faster than 2,000, for ~50 MB of memory.
VALIDATION_CHUNK = 10_000


def validate_run(
    engine: sa.Engine, run_id: str, config: ImportConfig, *, today: date | None = None, batch_size: int | None = None
) -> ValidationSummary:
    from .load import record_quarantine
    from .staging import iter_staged, mark_validation
    from .warehouse import COLUMN_LIMITS

    schema = config.warehouse_schema
    validator = OrderValidator(COLUMN_LIMITS, today=today)
    summary = ValidationSummary()
    seen_numbers: set[str] = set()
    for chunk in iter_staged(engine, run_id, status=None, chunk_size=batch_size or max(config.chunk_size, VALIDATION_CHUNK), schema=schema):
        result = validator.validate(chunk)
        by_id = {order.get("Id"): order for order, _ in chunk}
        for order_id in duplicate_order_numbers(chunk, seen_numbers):
            number = by_id[order_id].get("OrderNumber")
            result.add(order_id, "order_number_unique", f"OrderNumber {number!r} appears on more than one order")
        quarantine_rows = [
            {
                "sf_order_id": order_id,
                "order_number": (by_id.get(order_id) or {}).get("OrderNumber"),
                "account_name": (by_id.get(order_id) or {}).get("Account.Name"),
                "failed_checks": checks,
                "details": result.details[order_id],
            }
            for order_id, checks in result.failures.items()
        ]
        with engine.begin() as conn:
            mark_validation(conn, run_id, result.failures, checked_ids=[o.get("Id") for o, _ in chunk], schema=schema)
            record_quarantine(conn, run_id, quarantine_rows, schema=schema)
        summary.checked += len(chunk)
        summary.invalid += len(result.failures)
        for checks in result.failures.values():
            for check in checks:
                summary.failures_by_check[check] = summary.failures_by_check.get(check, 0) + 1
        for row in quarantine_rows[:20]:
            log.warning("Quarantined order %s (%s): %s", row["sf_order_id"], row["order_number"], "; ".join(row["details"].values()))
    summary.valid = summary.checked - summary.invalid
    log.info("Validated %d orders: %d valid, %d quarantined %s", summary.checked, summary.valid, summary.invalid, summary.failures_by_check)
    if summary.checked and summary.invalid_share > config.max_invalid_share:
        raise InvalidShareExceeded(
            f"{summary.invalid} of {summary.checked} orders ({summary.invalid_share:.0%}) failed validation, more than "
            f"max_invalid_share {config.max_invalid_share:.0%}; nothing was loaded. Failures by check: "
            f"{summary.failures_by_check}. See the quarantined_orders table for each order's reasons."
        )
    return summary
