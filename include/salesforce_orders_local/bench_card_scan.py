"""What the card-number scan costs the extract: CPU time per 100,000 orders with their products.

Generates a sandbox org, reads its orders as the REST extract does (pages of records, products in
each order's subquery, flattened), then times, on fresh copies of the pages:

- ``mask_records`` per page, as the extract calls it (the fast path: the records encoded as JSON
  and searched 64 at a time);
- the same with a card number typed into one order of every page, and into 1 % of the orders;
- for comparison, the scanner's regular expression over every text value, and the JSON encoding
  of the pages alone (which staging does anyway).

    python -m salesforce_orders_local.bench_card_scan --orders 5000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .airflow_env import connection_env


def read_pages(orders: int, state: Path) -> list[list[dict]]:
    """The org's orders as the REST extract stages them: pages of flattened orders and products."""
    from salesforce_orders.config import parse_config
    from salesforce_orders.extract import split_order
    from salesforce_orders.salesforce import SalesforceOrdersHook
    from salesforce_orders.soql import ExtractWindow, build_orders_query
    from salesforce_sandbox.server import SandboxServer

    org = SandboxServer(port=0, orders=orders, seed=7, state_dir=state, generator_options={"activated_share": 1.0}).start()
    try:
        os.environ.update(connection_env("salesforce_default", org.airflow_connection()))
        config = parse_config({})
        soql = build_orders_query(config, ExtractWindow(None, None, datetime(2000, 1, 1, tzinfo=UTC)))
        pages = []
        for page in SalesforceOrdersHook("salesforce_default").iter_query_pages(soql):
            records = []
            for record in page:
                order, items = split_order(record, config.order_items_relationship)
                records += [order, *items]
            pages.append(records)
        return pages
    finally:
        org.stop()


def cpu_seconds(pages: list[list[dict]], scan: Callable[[list[dict]], object], rounds: int = 5) -> float:
    """The least CPU time of ``rounds`` scans of fresh copies of the pages."""
    best = float("inf")
    for _ in range(rounds):
        copies = [[dict(record) for record in page] for page in pages]
        started = time.process_time()
        for page in copies:
            scan(page)
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    from salesforce_orders import redaction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        pages = read_pages(args.orders, Path(state))
    orders = sum(1 for page in pages for record in page if "OrderId" not in record)
    records = sum(len(page) for page in pages)

    def with_card_numbers(every: int) -> Callable[[list[dict]], object]:
        def scan(page: list[dict]) -> None:
            orders_of_page = [record for record in page if "OrderId" not in record]
            for order in orders_of_page[::every]:
                order["Description"] = "card 4111 1111 1111 1111"
            redaction.mask_records(page)

        return scan

    def every_value(page: list[dict]) -> None:
        for record in page:
            for value in record.values():
                if type(value) is str:
                    redaction.mask_card_numbers(value)

    print(f"{orders} orders, {records} records in {len(pages)} pages; CPU seconds per 100,000 orders:")
    for name, scan in (
        ("mask_records (no card number)", redaction.mask_records),
        ("mask_records (one card number a page)", with_card_numbers(10**9)),
        ("mask_records (card numbers in 1 % of orders)", with_card_numbers(100)),
        ("the regular expression over every value", every_value),
        ("the JSON encoding of the pages alone", msgspec.json.encode),
    ):
        print(f"  {name:46s} {cpu_seconds(pages, scan) / orders * 100_000:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
