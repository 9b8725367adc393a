"""Every value reaches SOQL quoted and SQL bound; names from the configuration are validated.

SOQL: hostile filter values and order numbers go to the sandbox's real SOQL engine and match
nothing (while an honest value matches). SQL: hostile record values are loaded into SQLite and
PostgreSQL, never appear in a statement's text, and come back intact; no pipeline module builds
SQL from strings. Names: a filter field or a warehouse schema that tries to inject is refused,
naming the key.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowFailException

from salesforce_orders import stages
from salesforce_orders.config import ConfigError, parse_config
from salesforce_orders.warehouse import validate_identifier, warehouse_metadata

PIPELINE = Path(stages.__file__).parent
SOQL_INJECTIONS = [
    "x' OR Name != '",
    "x\\' OR Name != \\'",  # escaping the escape
    "x' OR Id != null OR Type = 'y",
    "x'; DELETE FROM Order; --",
]
# Order numbers are at most 30 characters: these fit, so they do reach the query.
ORDER_NUMBER_INJECTIONS = ["' OR OrderNumber != '", "x\\' OR Id != null --", "1') OR (Id != null"]
SQL_INJECTION = "Robert'); DROP TABLE customers; --"


def extract(params: dict | None = None) -> dict:
    return stages.extract(
        run_id="manual__injection", dag_run_id="manual__injection", run_type="manual",
        data_interval_start=None, data_interval_end=None, params=params or {},
    )


# ---------------------------------------------------------------------------------------
# SOQL
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", SOQL_INJECTIONS)
def test_filter_value_trying_to_inject_soql_matches_nothing(wired_import, value):
    honest_type = wired_import.org_rows("SELECT Type FROM \"Order\" WHERE StatusCode = 'Activated' AND Type != '' LIMIT 1")[0]["Type"]
    wired_import.set_config(filter_field="Type", filter_value=honest_type)
    honest = extract()["extracted"]
    assert honest > 0

    wired_import.set_config(filter_field="Type", filter_value=value)
    assert extract()["extracted"] == 0


@pytest.mark.parametrize("value", ORDER_NUMBER_INJECTIONS)
def test_order_numbers_trying_to_inject_soql_match_nothing(wired_import, value):
    number = wired_import.org_rows(
        "SELECT OrderNumber FROM \"Order\" WHERE StatusCode = 'Activated' ORDER BY ActivatedDate DESC LIMIT 1"
    )[0]["OrderNumber"]
    assert extract({"order_numbers": [number]})["extracted"] == 1

    assert extract({"order_numbers": [value]})["extracted"] == 0


def test_order_numbers_longer_than_an_order_number_are_refused(wired_import):
    with pytest.raises(AirflowFailException, match=r"param 'order_numbers': .* is longer than an OrderNumber \(30\)"):
        extract({"order_numbers": ["00000101' OR Id != null OR Type = 'y"]})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("filter_field", "Type = 'x' OR Id"),
        ("filter_field", "Type) OR (Id != null"),
        ("order_object", "Order WHERE Id != null"),
        ("order_items_relationship", "OrderItems), (SELECT Id FROM Account"),
        ("customer_id_field", "Customer_ID__c FROM Account --"),
    ],
)
def test_names_trying_to_inject_soql_are_refused_naming_the_key(wired_import, key, value):
    config = {key: value, **({"filter_value": "x"} if key == "filter_field" else {})}
    wired_import.set_config(**config)
    calls = wired_import.org.admin.stats()["calls"]["total"]

    with pytest.raises(AirflowFailException, match=rf"salesforce_orders_config: {key}: not a valid Salesforce API name"):
        extract()
    assert wired_import.org.admin.stats()["calls"]["total"] == calls  # nothing was sent to Salesforce


# ---------------------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ['public"; DROP TABLE customers; --', "x; DROP SCHEMA public", "orders\n", "a.b"])
def test_schema_names_trying_to_inject_sql_are_refused(wired_import, schema):
    with pytest.raises(ConfigError, match=r"warehouse_schema: not a valid identifier"):
        parse_config({"warehouse_schema": schema})
    with pytest.raises(ValueError, match="invalid warehouse identifier"):
        validate_identifier(schema)
    with pytest.raises(ValueError, match="invalid warehouse identifier"):
        warehouse_metadata(schema)

    wired_import.set_config(warehouse_schema=schema)
    with pytest.raises(AirflowFailException, match="warehouse_schema"):
        extract()


def test_hostile_values_are_bound_never_spliced_into_sql(created_warehouse, make_transformed, capture_sql):
    from salesforce_orders.load import load_run
    from salesforce_orders.warehouse import tables

    notes = "Quote ' double \" backslash \\ semicolon ; comment -- end"
    order = make_transformed(1, account_name=SQL_INJECTION, notes=notes, metadata={"po'; DROP": "x'--"})
    engine, schema = created_warehouse.engine, created_warehouse.schema

    with capture_sql(engine) as statements:
        counts = load_run(engine, "manual__injection", [[order]], schema=schema, watermark=None)

    assert counts.inserted == 1
    assert statements and not [s for s in statements if SQL_INJECTION in s or "backslash" in s or "DROP" in s]
    t = tables(schema)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(t.external_orders)).mappings().one()
        assert conn.execute(sa.select(sa.func.count()).select_from(t.customers)).scalar() == 1  # still there
    assert (stored["account_name"], stored["notes"], stored["metadata"]) == (SQL_INJECTION, notes, {"po'; DROP": "x'--"})


def _built_at_run_time(node: ast.expr) -> bool:
    """An f-string, a concatenation or ``%`` formatting, or a ``.format()`` call."""
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def _sql_built_from_strings(tree: ast.AST) -> list[str]:
    """Calls that send SQL text put together at run time (where a value could be spliced in)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("text", "exec_driver_sql", "literal_column", "execute", "executemany") and _built_at_run_time(node.args[0]):
            found.append(f"{name}() at line {node.lineno}")
    return found


def test_no_pipeline_module_builds_sql_from_strings():
    """The pipeline speaks SQLAlchemy Core, which sends every value as a bound parameter; the only
    SQL text it sends is fixed (SQLite's PRAGMAs)."""
    modules = sorted(PIPELINE.glob("*.py"))
    assert len(modules) > 10
    offenders = {m.name: found for m in modules if (found := _sql_built_from_strings(ast.parse(m.read_text())))}
    assert offenders == {}
    assert _sql_built_from_strings(ast.parse("conn.execute(sa.text(f'SELECT * FROM t WHERE x = {v}'))"))  # it does find one
