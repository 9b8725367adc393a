"""The External Orders page's warehouse reads and the write-back retry, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from salesforce_orders.load import load_run, record_quarantine
from salesforce_orders.warehouse import tables
from salesforce_orders_ui import queries
from salesforce_orders_ui.actions import schedule_failed_writebacks

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def load(target, run_id, orders, now):
    load_run(target.engine, run_id, [orders], schema=target.schema, now=now, watermark=None)


def set_order(target, number: int, **values) -> None:
    t = tables(target.schema)
    with target.engine.begin() as conn:
        conn.execute(sa.update(t.external_orders).where(t.external_orders.c.order_number == f"{number:08d}").values(**values))


def numbers(page) -> list[str]:
    return [row["order_number"] for row in page.rows]


@pytest.fixture
def orders(created_warehouse, make_transformed):
    """Orders 1..6 imported a day apart (6 newest); 5 and 6 belong to a child of customer C-9."""
    target = created_warehouse
    for n in range(1, 7):
        child = n >= 5
        load(
            target,
            f"run-{n}",
            [make_transformed(n, account=5 if child else n, account_name="Gekko Bakery - Toronto" if child else f"Acme {n}_x",
                              parent_account=9 if child else None, parent_name="Gekko Bakery Corp.")],
            now=T0 + timedelta(days=n),
        )
    for n in (1, 5, 6):
        set_order(target, n, lifecycle_state="COMPLETE")
    set_order(target, 2, lifecycle_state="FAILED", lifecycle_error="Order: FIELD_CUSTOM_VALIDATION_EXCEPTION: PO required")
    set_order(target, 3, lifecycle_state="PROCESSING", lifecycle_error="Order: UNABLE_TO_LOCK_ROW: busy (will retry)")
    set_order(target, 4, lifecycle_state="READY")
    return target


def page_of(target, flt=None, number=1, size=50):
    with target.engine.connect() as conn:
        return queries.list_orders(conn, tables(target.schema), flt or queries.OrderFilter(), number, size)


def test_orders_newest_import_first_with_customer_and_parent(orders):
    page = page_of(orders)
    assert numbers(page) == [f"{n:08d}" for n in (6, 5, 4, 3, 2, 1)]
    assert page.total == 6 and page.pages == 1
    newest = page.rows[0]
    assert newest["account_name"] == "Gekko Bakery - Toronto"
    assert newest["parent_customer_id"] == "C-9" and newest["parent_name"] == "Gekko Bakery Corp."
    assert newest["salesforce_url"].startswith("https://")
    assert {r["order_number"]: r["sync_status"] for r in page.rows} == {
        "00000006": "ok", "00000005": "ok", "00000004": "pending", "00000003": "retrying", "00000002": "failed", "00000001": "ok",
    }


def test_orders_are_paged_with_the_total_of_the_whole_result(orders):
    second = page_of(orders, number=2, size=4)
    assert numbers(second) == ["00000002", "00000001"]
    assert (second.total, second.pages, second.first_row, second.last_row) == (6, 2, 5, 6)
    assert second.has_previous and not second.has_next
    beyond = page_of(orders, number=9, size=4)  # past the last page: the last, saying which was asked for
    assert numbers(beyond) == ["00000002", "00000001"] and (beyond.number, beyond.asked, beyond.total) == (2, 9, 6)
    assert second.asked is None


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (queries.OrderFilter(state="FAILED"), [2]),
        (queries.OrderFilter(state="COMPLETE"), [6, 5, 1]),
        (queries.OrderFilter(failed_only=True), [3, 2]),
        (queries.OrderFilter(imported_from=date(2026, 3, 3), imported_to=date(2026, 3, 4)), [3, 2]),
        (queries.OrderFilter(imported_from=date(2026, 3, 6)), [6, 5]),
        (queries.OrderFilter(imported_to=date(2026, 3, 2)), [1]),
        (queries.OrderFilter(search="00000004"), [4]),
        (queries.OrderFilter(search="0000000"), [6, 5, 4, 3, 2, 1]),
        (queries.OrderFilter(search="toronto"), [6, 5]),
        (queries.OrderFilter(search="ACME 3"), [3]),
        (queries.OrderFilter(search="%"), []),
        (queries.OrderFilter(search="_x"), [4, 3, 2, 1]),
        (queries.OrderFilter(search="toronto", state="COMPLETE"), [6, 5]),
    ],
)
def test_order_filters(orders, flt, expected):
    assert numbers(page_of(orders, flt)) == [f"{n:08d}" for n in expected]
    assert page_of(orders, flt).total == len(expected)


@pytest.mark.parametrize(
    ("search", "expected"),
    [("österreich", [1]), ("ÖSTERREICH", [1]), ("café élan", [2]), ("ÆRØ", [2]), ("straße", [3]), ("o'brien 100% fun_co", [4])],
)
def test_the_account_search_ignores_case_of_non_ascii_letters_too(created_warehouse, make_transformed, search, expected):
    """"Part of the account name, any case" holds for names beyond ASCII: SQLite's LIKE and lower()
    fold ASCII letters only, so "österreich" did not find "Österreich Telekom AG" on a SQLite warehouse."""
    names = {1: "Österreich Telekom AG", 2: "Ærø Café ÉLAN", 3: "MÜLLER STRASSE Straße GmbH", 4: "O'Brien 100% Fun_Co"}
    for n, name in names.items():
        load(created_warehouse, f"run-{n}", [make_transformed(n, account=n, account_name=name)], now=T0)
    assert numbers(page_of(created_warehouse, queries.OrderFilter(search=search))) == [f"{n:08d}" for n in expected]
    with created_warehouse.engine.begin() as conn:
        record_quarantine(conn, "run-9", [{"sf_order_id": f"801{n:012d}ZZZ", "order_number": f"{900 + n:08d}", "account_name": name,
                                           "failed_checks": ["has_products"], "details": {"has_products": "none"}}
                                          for n, name in names.items()], schema=created_warehouse.schema, now=T0)
        refused = queries.list_quarantine(conn, tables(created_warehouse.schema), search=search)
    assert [r["order_number"] for r in refused.rows] == [f"{900 + n:08d}" for n in expected]


def test_the_quarantine_search_finds_an_order_number_by_its_leading_part_as_the_orders_page_does(created_warehouse):
    with created_warehouse.engine.begin() as conn:
        record_quarantine(conn, "run-1", [{"sf_order_id": f"801{n:012d}AAA", "order_number": f"{n:08d}", "account_name": "Monarch GmbH",
                                           "failed_checks": ["has_products"], "details": {"has_products": "none"}}
                                          for n in (120, 121, 130)], schema=created_warehouse.schema, now=T0)
        t = tables(created_warehouse.schema)
        assert sorted(r["order_number"] for r in queries.list_quarantine(conn, t, search="0000012").rows) == ["00000120", "00000121"]
        assert [r["order_number"] for r in queries.list_quarantine(conn, t, search="00000130").rows] == ["00000130"]
        assert queries.list_quarantine(conn, t, search="0000012%").total == 0  # a wildcard is a character


def test_a_filter_refuses_an_unknown_state():
    with pytest.raises(ValueError, match="unknown lifecycle state 'DONE'"):
        queries.OrderFilter(state="DONE")


def test_quarantine_lists_each_refused_order_once_until_released(created_warehouse):
    target = created_warehouse
    t = tables(target.schema)

    def refuse(run_id, order_id, number, check, when):
        with target.engine.begin() as conn:
            record_quarantine(conn, run_id, [{"sf_order_id": order_id, "order_number": number, "account_name": "Monarch GmbH",
                                               "failed_checks": [check], "details": {check: f"{check} failed"}}],
                              schema=target.schema, now=when)

    refuse("run-1", "801A", "00000200", "has_products", T0)
    refuse("run-2", "801A", "00000200", "service_address", T0 + timedelta(hours=1))
    refuse("run-1", "801B", "00000201", "has_products", T0)
    refuse("run-1", "801C", "00000202", "has_products", T0)
    with target.engine.begin() as conn:
        conn.execute(sa.update(t.quarantined_orders).where(t.quarantined_orders.c.sf_order_id == "801C").values(released_at=T0))
        page = queries.list_quarantine(conn, t)
        assert [(r["order_number"], r["failed_checks"], r["run_id"]) for r in page.rows] == [
            ("00000200", ["service_address"], "run-2"),
            ("00000201", ["has_products"], "run-1"),
        ]
        assert page.total == 2
        assert [r["order_number"] for r in queries.list_quarantine(conn, t, search="00000201").rows] == ["00000201"]
        assert queries.overview(conn, t).open_quarantine == 2


def add_outbox(conn, t, record: str, state: str, code: str | None = None, attempts: int = 1) -> int:
    return conn.execute(
        sa.insert(t.writeback_outbox).values(
            sf_object="Order", sf_record_id=record, sf_order_id=record, action="mark_imported", fields={"Status": "Imported"},
            state=state, attempts=attempts, next_attempt_at=T0 + timedelta(hours=1) if state == "FAILED" else None,
            last_error_code=code, last_error_message=code and f"{code} message", created_run_id="r", updated_run_id="r",
            created_at=T0, updated_at=T0,
        )
    ).inserted_primary_key[0]


def test_retry_makes_open_failures_due_and_revives_given_up_records(created_warehouse):
    target = created_warehouse
    t = tables(target.schema)
    now = T0 + timedelta(minutes=5)
    with target.engine.begin() as conn:
        failed = add_outbox(conn, t, "801000000000001AAA", "FAILED", "FIELD_CUSTOM_VALIDATION_EXCEPTION", attempts=2)
        dead = add_outbox(conn, t, "801000000000002AAA", "DEAD", "INVALID_FIELD", attempts=5)
        deleted = add_outbox(conn, t, "801000000000003AAA", "DEAD", "ORDER_DELETED")
        superseded = add_outbox(conn, t, "801000000000004AAA", "FAILED", "INVALID_FIELD")
        newer_done = add_outbox(conn, t, "801000000000004AAA", "DONE")
        assert queries.overview(conn, t).open_writeback_failures == 2

        scheduled = schedule_failed_writebacks(conn, t, now=now)
        assert (scheduled.failed, scheduled.revived, scheduled.total) == (1, 1, 2)

        rows = {r["id"]: r for r in conn.execute(sa.select(t.writeback_outbox)).mappings()}
    assert (rows[failed]["state"], rows[failed]["attempts"], rows[failed]["next_attempt_at"]) == ("FAILED", 2, now)
    assert (rows[dead]["state"], rows[dead]["attempts"], rows[dead]["next_attempt_at"]) == ("FAILED", 0, now)
    assert rows[deleted]["state"] == "DEAD" and rows[deleted]["next_attempt_at"] is None
    assert rows[superseded]["next_attempt_at"] == T0 + timedelta(hours=1)
    assert rows[newer_done]["state"] == "DONE"


def test_runs_newest_first_and_overview_counts(orders):
    t = tables(orders.schema)
    with orders.engine.begin() as conn:
        for i in range(3):
            conn.execute(sa.insert(t.import_runs).values(run_id=f"manual__{i}", dag_run_id=f"manual__{i}", status="success",
                                                         started_at=T0 + timedelta(hours=i)))
        assert [r["run_id"] for r in queries.list_runs(conn, t).rows] == ["manual__2", "manual__1", "manual__0"]
        overview = queries.overview(conn, t)
    assert overview.orders_by_state == {"READY": 1, "PROCESSING": 1, "COMPLETE": 3, "FAILED": 1}
    assert overview.orders == 6
