"""The messages docs/runbook.md quotes are the messages the import gives, so the two cannot drift.

Every message quoted in the first column of the runbook's ``extract``, ``validate`` and ``load``
tables is produced here by a real run of the stages against the sandbox org (the fault, config or
warehouse the runbook describes, made to happen), and every refusal of "The warehouse refused a
statement" by a real statement the warehouse refuses, told as the tasks tell it; each is matched
against the quote: ``...`` in a quote stands for any text, ``<...>`` for a value. A quote without
a producer fails, and so does a message that no longer reads as the runbook says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

# The PostgreSQL role and the connections the schema tests use, for the two messages of a least-privilege role.
from test_warehouse_schema import connect_as, grant_as_documented, import_role  # noqa: F401

from salesforce_orders.warehouse import tables
from salesforce_orders_local.airflow_env import sqlite_warehouse_connection

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
SECTIONS = ("`extract`", "`validate`", "`load`", "The warehouse refused a statement")


def runbook_quotes(section: str) -> list[str]:
    """The quotes in the first column ("Log says", "What") of the table under ``### section``."""
    text = RUNBOOK.read_text()
    body = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^#)", text, re.M | re.S)
    assert body, f"docs/runbook.md has no section ### {section}"
    rows = [line for line in body.group(1).splitlines() if line.startswith("| ")][1:]  # not the header
    quotes = []
    for row in rows:
        first_cell = row.split(" | ")[0].removeprefix("| ")
        spans = re.findall(r"`([^`]+)`", first_cell)
        if not spans:  # a row that describes what is seen rather than quoting it
            continue
        quotes.extend(spans if " / " in first_cell else spans[:1])  # "`a` / `b`": two messages
    return quotes


def pattern(quote: str) -> re.Pattern[str]:
    """A quote as a regular expression: ``...`` is any text, ``<...>`` one value, the rest literal."""
    parts = re.split(r"( ?\.\.\. ?|<[^>]+>)", quote)
    return re.compile("".join(".*?" if "..." in p else ".+?" if p.startswith("<") else re.escape(p) for p in parts), re.S)


# ---------------------------------------------------------------------------------------
# The runs that produce each message: the error that ended the run, or a warning it logged
# ---------------------------------------------------------------------------------------


def error_of(p, **run_args) -> str:
    run = p.run(until=run_args.pop("until", "validate"), **run_args)
    assert run.error is not None, "the run was expected to fail"
    return str(run.error)


def warnings_of(p, caplog, until: str) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run = p.run(until=until)
    assert run.succeeded, run.error
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def invalid_config(p, **_) -> str:
    p.set_config(lookback_days="a fortnight")
    return error_of(p)


def bad_since(p, **_) -> str:
    return error_of(p, params={"since": "yesterday"})


def bad_order_numbers(p, **_) -> str:
    return error_of(p, params={"order_numbers": ["0" * 31]})


def disabled(p, **_) -> str:
    p.set_config(enabled=False)
    return error_of(p)


def wrong_password(p, **_) -> str:
    p.set_connection("salesforce_default", {**p.org.airflow_connection(), "password": "not-the-password"})
    return error_of(p)


def allowance_used_up(p, **_) -> str:
    p.org.admin.set_faults(daily_api_limit=p.org.admin.stats()["api_usage"]["used"])
    return error_of(p)


def budget_share_reached(p, **_) -> str:
    p.set_config(api_budget_share=0.5)
    p.org.admin.set_faults(daily_api_limit=p.org.admin.stats()["api_usage"]["used"] + 4)  # 2 calls: not two pages
    return error_of(p)


def outage(p, monkeypatch, **_) -> str:
    from urllib3.util.retry import Retry

    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)  # the hook's retries, without their waits
    p.org.admin.set_faults(error_503_share=1.0)
    return error_of(p)


def field_the_org_lacks(p, **_) -> str:
    p.set_config(order_field_mappings={"Region__c": "region"})
    return error_of(p)


def base_field_the_org_lacks(p, monkeypatch, **_) -> str:
    from salesforce_orders import soql

    monkeypatch.setattr(soql, "_ORDER_BASE_FIELDS", (*soql._ORDER_BASE_FIELDS, "Delivery_Window__c"))
    return error_of(p)


def currency_rates_unreadable(p, **_) -> str:
    p.org.admin.set_faults(unreadable_objects=["CurrencyType"])
    return error_of(p)


def warehouse_unreachable(p, tmp_path, **_) -> str:
    p.set_connection("orders_warehouse", sqlite_warehouse_connection(tmp_path / "no-such-directory" / "warehouse.db"))
    return error_of(p)


def role_may_not_upgrade(p, request, restore_release, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    role = request.getfixturevalue("import_role")
    restore_release(p.engine, p.schema, "release-7bdb8f0")  # the warehouse the previous release left
    grant_as_documented(p, role)
    connect_as(p, role)
    return error_of(p)


def newer_warehouse(p, **_) -> str:
    assert p.run(until="extract").succeeded
    p.execute("UPDATE warehouse_schema_version SET version_num = '9999'")
    return error_of(p)


def not_a_warehouse(p, **_) -> str:
    p.execute("CREATE TABLE external_orders (id INTEGER PRIMARY KEY)")
    return error_of(p)


def read_only_warehouse(p, request, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    assert p.run(until="extract").succeeded
    connect_as(p, p.engine.url.username, options="-c default_transaction_read_only=on")
    return error_of(p, until="extract")


def card_number_typed_in(p, caplog, **_) -> str:
    order_id = sorted(p.expected_order_ids())[0]
    p.org_update("Order", order_id, Description="Paid with 4111 1111 1111 1111, see note")
    return warnings_of(p, caplog, until="extract")


def breaker(p, **_) -> str:
    p.set_config(max_invalid_share=0.0)
    return error_of(p)


def single_invalid_orders(p, caplog, **_) -> str:
    return warnings_of(p, caplog, until="validate")


def load_held_up(p, request, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    return refusal_told(p, "load", lambda conn: (
        conn.exec_driver_sql("SET LOCAL lock_timeout = '50ms'"),
        conn.execute(sa.update(tables(p.schema).sync_state).values(value="x")),
    ), hold_lock=True)


def order_refused_by_the_warehouse(p, caplog, **_) -> str:
    """A customer row re-pointed by hand at another account: the account's next load collides on its id."""
    assert p.run(until="load").succeeded
    order = p.query("SELECT o.sf_order_id, o.customer_id FROM external_orders o ORDER BY o.sf_order_id LIMIT 1")[0]
    p.execute("UPDATE customers SET sf_account_id = '001HANDEDITED00001' WHERE customer_id = :c", c=order["customer_id"])
    p.org_update("Order", order["sf_order_id"], Description="changed after the first load")
    return warnings_of(p, caplog, until="load")


# ---- the warehouse refused a statement: real refusals, told as a task tells them --------


def refusal_told(p, stage: str | None, write: Callable[[sa.Connection], Any], *, role: str | None = None, hold_lock: bool = False) -> str:
    """What a task says when the warehouse refuses ``write`` (as ``role``; while another
    transaction holds the rows, with ``hold_lock``)."""
    from salesforce_orders.warehouse.errors import explain

    assert p.run(until="extract").succeeded  # the warehouse exists, at its version
    with p.engine.connect() as holder:
        if hold_lock:
            holder.execute(sa.select(tables(p.schema).sync_state).with_for_update())
        with pytest.raises(sa.exc.DBAPIError) as refused, p.engine.begin() as conn:
            if role:
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            write(conn)
        holder.rollback()
    return str(explain(refused.value, "orders_warehouse", stage=stage))


def read_only_transaction(p, request, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    return refusal_told(p, "load", lambda conn: (
        conn.exec_driver_sql("SET TRANSACTION READ ONLY"),
        conn.execute(sa.update(tables(p.schema).sync_state).values(value="x")),
    ))


def read_only_sqlite_file(p, **_) -> str:
    assert p.run(until="extract").succeeded
    read_only = sa.create_engine(f"sqlite:///file:{p.engine.url.database}?mode=ro&uri=true")
    try:
        with pytest.raises(sa.exc.DBAPIError) as refused, read_only.begin() as conn:
            conn.execute(sa.update(tables().sync_state).values(value="x"))
    finally:
        read_only.dispose()
    from salesforce_orders.warehouse.errors import explain

    return str(explain(refused.value, "orders_warehouse", stage="load"))


def missing_privilege(p, request, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    role = request.getfixturevalue("import_role")
    assert p.run(until="extract").succeeded
    with p.engine.begin() as conn:  # the schema's usage granted, the table's rights forgotten
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{p.schema}" TO "{role}"')
    return refusal_told(p, "load", lambda conn: conn.execute(sa.update(tables(p.schema).sync_state).values(value="x")), role=role)


def key_held_by_another_row(p, **_) -> str:
    def insert_twice(conn: sa.Connection) -> None:
        row = {"key": "written-by-hand", "value": "x", "updated_at": datetime.now(UTC)}
        conn.execute(sa.insert(tables(p.schema).sync_state), [row])
        conn.execute(sa.insert(tables(p.schema).sync_state), [row])

    return refusal_told(p, "report", insert_twice)


def anything_else(p, request, **_) -> str:
    p = request.getfixturevalue("postgres_pipeline")
    return refusal_told(p, "load", lambda conn: conn.execute(sa.select(sa.cast(sa.literal("not a number"), sa.Integer))))


# quote (as docs/runbook.md has it) -> the run that produces it
PRODUCED_BY: dict[str, Callable[..., str]] = {
    "salesforce_orders_config: <key>: ...": invalid_config,
    "param 'since': ... is not a date": bad_since,
    "param 'order_numbers': ...": bad_order_numbers,
    "Import disabled: 'enabled' is false": disabled,
    "Salesforce refused the login of Airflow connection 'salesforce_default'": wrong_password,
    "Salesforce's daily API allowance is used up (Salesforce answered 403 REQUEST_LIMIT_EXCEEDED: ...)": allowance_used_up,
    "Stopped before exceeding this run's API budget (...); the next run continues (api_budget_share: ...)": budget_share_reached,
    "Salesforce (Airflow connection ...) did not answer": outage,
    "Salesforce refused the query (INVALID_FIELD: No such column 'Region__c' on entity 'Order'.). order_field_mappings.Region__c "
    "in the salesforce_orders_config Variable names 'Region__c', which this org does not accept there: ...": field_the_org_lacks,
    "Salesforce refused the query (...). '<field>' is a name the import always reads": base_field_the_org_lacks,
    "The org has multi-currency (its Orders carry CurrencyIsoCode) but its currency rates cannot be read ...": currency_rates_unreadable,
    "The warehouse (Airflow connection 'orders_warehouse', ...) cannot be used": warehouse_unreachable,
    "The warehouse (...): the warehouse needs ... an upgrade to schema version <version>..., and this connection's role may not "
    "change the schema (permission denied for schema ...). Have the schema's owner run ...": role_may_not_upgrade,
    "The warehouse (...): the warehouse is at schema version <version>, which this code does not know": newer_warehouse,
    "... holds some of the import's tables but not ..., and no warehouse_schema_version table: it is not a warehouse "
    "any release created": not_a_warehouse,
    "The warehouse (Airflow connection 'orders_warehouse') refused a statement on table ...": read_only_warehouse,
    "Card numbers masked in <n> orders before staging ...": card_number_typed_in,
    "<n> of <m> orders (<share>) failed validation, more than max_invalid_share": breaker,
    "Quarantined order ...": single_invalid_orders,
    "load: The warehouse (Airflow connection 'orders_warehouse') refused a statement on table ...: another transaction held "
    "the rows or the database too long ...": load_held_up,
    "Quarantined order ...: the warehouse refused the order: ...": order_refused_by_the_warehouse,
    "another transaction held the rows or the database too long": load_held_up,
    "the database is read-only for this connection": read_only_transaction,
    "the database file is read-only for the Airflow worker": read_only_sqlite_file,
    "this connection's role lacks a privilege (permission denied for table <table>)": missing_privilege,
    "a row with the same key is there already (constraint <constraint>)": key_held_by_another_row,
    "(SQLSTATE <code>)": anything_else,
}
NEEDS_POSTGRES = {role_may_not_upgrade, read_only_warehouse, load_held_up, read_only_transaction, missing_privilege, anything_else}


def all_quotes() -> list[str]:
    return [quote for section in SECTIONS for quote in runbook_quotes(section)]


def test_every_quoted_message_has_a_run_that_produces_it():
    quotes = all_quotes()
    assert len(quotes) >= 25, "the runbook's tables were not found"
    assert set(quotes) == set(PRODUCED_BY), (
        f"quoted but produced by no run: {sorted(set(quotes) - set(PRODUCED_BY))}; "
        f"produced but no longer quoted: {sorted(set(PRODUCED_BY) - set(quotes))}"
    )


@pytest.mark.parametrize(
    "quote",
    [pytest.param(q, marks=[pytest.mark.postgres] if f in NEEDS_POSTGRES else [], id=f.__name__) for q, f in PRODUCED_BY.items()],
)
def test_the_run_gives_the_message_the_runbook_quotes(quote, sqlite_pipeline, request, monkeypatch, tmp_path, caplog, restore_release):
    produced = PRODUCED_BY[quote](
        sqlite_pipeline, request=request, monkeypatch=monkeypatch, tmp_path=tmp_path, caplog=caplog, restore_release=restore_release
    )
    assert pattern(quote).search(produced), f"docs/runbook.md quotes\n  {quote}\nthe run said\n  {produced}"
