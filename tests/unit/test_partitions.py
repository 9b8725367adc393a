"""The transform's partitions: ranges of order ids planned over a run's valid staged orders, read
and cleared range by range, and the instances' results combined."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from salesforce_orders.partitions import (
    EVERY_ORDER_ID,
    OrderIdRange,
    combine_results,
    partition_count,
    plan_partitions,
)
from salesforce_orders.staging import (
    clear_transformed,
    iter_staged,
    iter_transformed,
    mark_validation,
    stage_orders,
    stage_transformed,
)

RUN = "run-1"


def sf_id(prefix: str, n: int) -> str:
    """The order id ``make_transformed(n)`` gives its order."""
    return f"{prefix}{n:012d}AAA"


def staged_run(target, orders: int, invalid: set[int] = frozenset()) -> list[str]:
    """``orders`` orders staged for RUN, those numbered in ``invalid`` marked invalid; their ids."""
    ids = [sf_id("801", n) for n in range(1, orders + 1)]
    with target.engine.begin() as conn:
        stage_orders(
            conn,
            RUN,
            [{"Id": order_id, "SystemModstamp": "2026-01-01T00:00:00.000+0000"} for order_id in ids],
            schema=target.schema,
        )
        mark_validation(conn, RUN, {sf_id("801", n) for n in invalid}, schema=target.schema)
    return ids


def plan(target, **kwargs) -> list[OrderIdRange]:
    with target.engine.connect() as conn:
        return plan_partitions(conn, RUN, schema=target.schema, **kwargs)


@pytest.mark.parametrize(
    ("orders", "partitions", "min_orders", "expected"),
    [
        (0, 2, 10, 1),
        (19, 2, 10, 1),
        (20, 2, 10, 2),
        (1000, 2, 10, 2),
        (35, 4, 10, 3),
        (5, 1, 1, 1),
        (5, 8, 1, 5),
    ],
)
def test_a_partition_holds_at_least_the_minimum_and_a_run_has_one_at_least(
    orders, partitions, min_orders, expected
):
    assert partition_count(orders, partitions=partitions, min_orders=min_orders) == expected


def test_the_ranges_split_the_valid_orders_evenly_and_cover_every_order_id(created_warehouse):
    ids = staged_run(created_warehouse, 100, invalid=set(range(1, 51, 2)))  # 25 invalid among the first half
    valid = [order_id for n, order_id in enumerate(ids, start=1) if not (n <= 50 and n % 2)]
    ranges = plan(created_warehouse, partitions=3, min_orders=10)
    assert len(ranges) == 3
    assert ranges[0].start is None and ranges[-1].stop is None  # open at both ends
    assert all(before.stop == after.start for before, after in zip(ranges, ranges[1:], strict=False))
    sizes = [sum(1 for order_id in valid if _inside(r, order_id)) for r in ranges]
    assert sizes == [25, 25, 25]
    assert {r.start for r in ranges[1:]} <= set(valid)


def test_a_small_run_is_one_range_of_every_order_id(created_warehouse):
    staged_run(created_warehouse, 30)
    assert plan(created_warehouse, partitions=2, min_orders=16) == [EVERY_ORDER_ID]


def test_a_range_reads_and_clears_only_its_own_orders_and_batches(created_warehouse, make_transformed):
    target = created_warehouse
    ids = staged_run(target, 40)
    ranges = plan(target, partitions=2, min_orders=10)
    assert ranges[1].start == ids[20]
    for r in ranges:  # each range in chunks of 7: no chunk reaches past its range
        chunks = list(iter_staged(target.engine, RUN, chunk_size=7, within=r, schema=target.schema))
        assert all(_inside(r, order["Id"]) for chunk in chunks for order, _items in chunk)
        assert sum(map(len, chunks)) == 20
        with target.engine.begin() as conn:
            for chunk in chunks:
                stage_transformed(
                    conn,
                    RUN,
                    [make_transformed(int(order["Id"][3:15])) for order, _ in chunk],
                    schema=target.schema,
                )
    assert [
        r.order.sf_order_id
        for chunk in iter_transformed(target.engine, RUN, schema=target.schema)
        for r in chunk
    ] == ids

    with target.engine.begin() as conn:
        clear_transformed(conn, RUN, within=ranges[0], schema=target.schema)
    left = [
        r.order.sf_order_id
        for chunk in iter_transformed(target.engine, RUN, schema=target.schema)
        for r in chunk
    ]
    assert left == ids[20:]


def test_a_range_reaches_sql_as_bound_values():
    column = sa.column("sf_order_id")
    (start, stop) = OrderIdRange("801'; DROP TABLE x; --", "802").where(column)
    compiled = sa.and_(start, stop).compile()
    assert "DROP" not in str(compiled) and set(compiled.params.values()) == {"801'; DROP TABLE x; --", "802"}
    assert OrderIdRange.from_dict(OrderIdRange("a", None).as_dict()) == OrderIdRange("a", None)
    assert OrderIdRange.from_dict(None) == EVERY_ORDER_ID and EVERY_ORDER_ID.where(column) == []


def test_the_instances_results_are_summed_and_a_missing_one_leaves_no_result():
    parts = [
        {"run_id": RUN, "transformed": 10, "skipped": 1, "skipped_reasons": {"zero_total": 1}},
        {"run_id": RUN, "transformed": 7, "skipped": 3, "skipped_reasons": {"zero_total": 2, "other": 1}},
    ]
    assert combine_results(parts) == {
        "run_id": RUN,
        "transformed": 17,
        "skipped": 4,
        "skipped_reasons": {"zero_total": 3, "other": 1},
        "partitions": 2,
    }
    assert combine_results(parts[0]) == parts[0]  # Airflow hands on a single instance's result as it is
    assert combine_results([parts[0], None]) is None
    assert combine_results(None) is None and combine_results([]) is None


def _inside(r: OrderIdRange, order_id: str) -> bool:
    return (r.start is None or order_id >= r.start) and (r.stop is None or order_id < r.stop)
