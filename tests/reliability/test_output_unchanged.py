"""The import's output stays the same: the warehouse as today's code leaves it, kept as a golden file.

A generated org (fixed seed, fixed clock, with the generator's awkward cases: quarantined orders,
four currencies with dated rates, account hierarchies, multi-location customers, service groups,
zero totals, card fields; plus card numbers typed into free text) is imported by the DAG's stages
(``conftest.Pipeline``) into a fresh warehouse, on SQLite and on PostgreSQL, in three runs:

1. the first import (inserts, quarantine, write-back of every order and account);
2. an hour after people changed things in Salesforce (``change_the_org``: an account renamed, a
   price changed, a product removed, an order back to Draft, one deleted, a quarantined order
   fixed, a loaded one broken, a Draft order activated): updates, soft-deleted products, history
   versions, status changes, quarantine released and set, the echo of run 1's write-back left out;
3. a full re-sync: every order read again, each one the load's no-op (unchanged).

Each dialect runs it twice: with the transform of the whole run in one go, and split into three
ranges of order ids as the DAG's mapped ``transform`` instances take them (run last first): the
warehouse must be the same golden either way.

Every table and view that holds the import's output is then dumped in a canonical form (see
"The canonical dump" below): rows sorted by natural key, columns by name, run ids as "run1"...,
timestamps of the import's own clock as "<set>", serial ids and durations dropped, the org's URL
replaced; every business value kept exactly (amounts as decimal text, Salesforce ids and
stamps, content hashes, JSON). It must equal ``tests/data/output_golden.jsonl``: one header line
per table (key, columns, row count, sha256), then its rows. On a difference the test names the
tables that differ and prints, per table, the first rows that differ by natural key with each
changed value as ``golden -> now``. SQLite and PostgreSQL share one golden.

One stopped clock (``Clock``) serves the org (``SandboxServer(clock=...)``: ids, dates and
stamps are the same every time) and the import (``import_clock``: its "now", today, the times
it writes and the write-back's), whatever the day the test runs; the test moves it on between
runs.

The golden is today's output. Regenerate it only for a change of output that is intended, and
say so in the commit (``git diff tests/data`` shows the rows that changed). SQLite writes it, then
PostgreSQL is checked against it (run without ``-n``, so both run in one process)::

    REGENERATE_OUTPUT_GOLDEN=1 CI=true .venv/bin/python -m pytest -q -p no:cacheprovider \\
        tests/reliability/test_output_unchanged.py
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "output_golden.jsonl"
REGENERATE = os.environ.get("REGENERATE_OUTPUT_GOLDEN") == "1"

ORDERS = 600
SEED = 4242
# The org's clock and the import's: dates in the org are anchored here, and the import's "now"
# (its lookback window, today's date for validation) is this moment, whatever the day the test runs.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GENERATOR = {"now": NOW, "dirty_share": 0.08, "items_per_order": 3.0, "activated_share": 0.85}
CONFIG = {
    "order_prefix": "SF-",
    "history_mode": True,
    "routing": {
        "rules": [
            {"field": "Type", "operator": "in", "value": ["New Service", "Add-On"], "destination": "work_order"},
            {"field": "Account.Type", "operator": "equals", "value": "Partner", "destination": "request"},
        ],
        "default_destination": "request",
    },
    "order_field_mappings": {"PoNumber": "po_number", "Account.AccountNumber": "account_number"},
    "item_field_mappings": {"Product2.Family": "product_family"},
}

_written_this_session: list[Path] = []


@dataclass
class Clock:
    """One clock for the org and the import, stopped: moved on only by the test (``at``). The org
    stamps each write a millisecond after the one before, so its writes fall just after the
    moment the clock shows, as they would with the clock running."""

    at: datetime = NOW

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def org(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[Any]:
    """A fresh org for each test: the same ids, stamps and data every time (a re-seeded org would
    carry on the stamps of the one before)."""
    from salesforce_sandbox.server import SandboxServer

    with SandboxServer(
        port=0, orders=ORDERS, seed=SEED, clock=clock.now, generator_options=GENERATOR,
        state_dir=tmp_path_factory.mktemp("sandbox"),
    ) as server:
        yield server


@pytest.fixture
def import_clock(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """The import reads ``clock`` where it reads the time: its "now" and today (the lookback window,
    validation), the times it writes into the warehouse (the history's validity periods) and the
    write-back's (compared with the org's stamps to tell its own writes from others')."""
    import salesforce_orders
    from salesforce_orders import stages, writeback
    from salesforce_orders.warehouse import types

    class Today(date):
        @classmethod
        def today(cls) -> date:
            return clock.at.date()

    class Now(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return clock.at.astimezone(tz) if tz else clock.at.replace(tzinfo=None)

    monkeypatch.setattr(stages, "_now", clock.now)
    monkeypatch.setattr(stages, "date", Today)
    # every module that took the warehouse's utc_now (by name, so each holds its own reference),
    # and the one they take it from (for imports made at call time). All of them are imported
    # first: one imported while the clock is patched would keep this test's clock for good.
    for info in pkgutil.walk_packages(salesforce_orders.__path__, "salesforce_orders."):
        if not any(part in info.name for part in (".migrations", ".airflow_dags")):
            importlib.import_module(info.name)
    for name, module in list(sys.modules.items()):
        if name.startswith("salesforce_orders") and getattr(module, "utc_now", None) is types.utc_now and module is not types:
            monkeypatch.setattr(module, "utc_now", clock.now)
    monkeypatch.setattr(types, "utc_now", clock.now)
    monkeypatch.setattr(writeback, "datetime", Now)


def _editor(pipeline: Any) -> Callable[..., None]:
    """``edit(sobject, id, **values)``: a change made in Salesforce by a sales rep (not by the import's user)."""
    store = pipeline.org.store
    rep = pipeline.org_rows('SELECT Id FROM "User" WHERE Id != ? ORDER BY Id LIMIT 1', store.integration_user_id)[0]["Id"]

    def edit(sobject: str, record_id: str, **values: Any) -> None:
        with store.lock:
            store.update(sobject, record_id, values, as_user=rep)

    return edit


def type_card_numbers(pipeline: Any) -> None:
    """Before the first run, what the generator does not make: card numbers typed into free text
    (an order's description and PO number), which the import masks."""
    edit = _editor(pipeline)
    first, second = [r["Id"] for r in pipeline.org_rows(
        "SELECT Id FROM \"Order\" WHERE StatusCode = 'Activated' AND ActivatedDate >= ? ORDER BY Id LIMIT 2",
        (NOW - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%S"))]
    edit("Order", first, Description="Customer paid by phone: card 4111 1111 1111 1111, exp 12/29.")
    edit("Order", second, PoNumber="5555-5555-5555-4444")


def change_the_org(pipeline: Any) -> None:
    """Between the two runs, what people do in Salesforce, on orders chosen by Id: an account
    renamed, a price changed, a product removed, an order back to Draft, one deleted, a
    quarantined order fixed, a loaded order broken, a Draft order activated."""
    p, store, edit = pipeline, pipeline.org.store, _editor(pipeline)
    with_items = [r["sf_order_id"] for r in p.query(
        "SELECT sf_order_id FROM external_order_items WHERE NOT is_deleted GROUP BY sf_order_id "
        "HAVING COUNT(*) > 1 ORDER BY sf_order_id")]
    renamed, repriced, shortened, drafted, deleted, broken = with_items[:6]
    account = p.scalar("SELECT sf_account_id FROM external_orders WHERE sf_order_id = :o", o=renamed)
    edit("Account", account, Name="Renamed & Sons Ltd")
    item = p.scalar("SELECT MIN(sf_order_item_id) FROM external_order_items WHERE sf_order_id = :o", o=repriced)
    edit("OrderItem", item, UnitPrice=123.45)
    item = p.scalar("SELECT MIN(sf_order_item_id) FROM external_order_items WHERE sf_order_id = :o", o=shortened)
    edit("Order", shortened, Status="Draft")  # as Salesforce allows taking a product off an order
    with store.lock:
        store.delete("OrderItem", item)
    edit("Order", shortened, Status="Activated")
    edit("Order", drafted, Status="Draft")
    edit("Order", deleted, Status="Draft")
    with store.lock:
        store.delete("Order", deleted)
    edit("Order", broken, ShippingCity=None, BillingCity=None)
    fixed = sorted(p.quarantined_ids())[0]
    edit("Order", fixed, **{f"{prefix}{part}": value for prefix in ("Billing", "Shipping") for part, value in (
        ("Street", "1 Main Street"), ("City", "Springfield"), ("State", "IL"), ("PostalCode", "62701"),
        ("Country", "United States"))}, EffectiveDate=NOW.date().isoformat())
    (activated,) = store.activatable_order_ids(1)
    edit("Order", activated, Status="Activated")


def test_every_table_and_view_is_compared() -> None:
    """A table or view added to the warehouse is added to the dump (or to the staging left out)."""
    from salesforce_orders.warehouse import VIEWS as VIEW_DEFINITIONS
    from salesforce_orders.warehouse import tables

    t = tables()
    output = {table.name for table in t.metadata.tables.values()} - {table.name for table in t.staging}
    assert {s.name for s in TABLES} == output
    assert {s.name for s in VIEWS} == set(VIEW_DEFINITIONS)


# The transform split into three ranges of order ids (the DAG's mapped instances), run last first:
# the warehouse is the same as with one transform of the whole run.
PARTITIONED = {"transform_partitions": 3, "transform_partition_min_orders": 50}


@pytest.mark.usefixtures("import_clock")
@pytest.mark.parametrize("partitioned", [False, True], ids=["one_transform", "three_partitions"])
def test_output_unchanged(pipeline: Any, org: Any, clock: Clock, partitioned: bool) -> None:
    pipeline.set_config(**CONFIG, **(PARTITIONED if partitioned else {}))
    pipeline.partitions_last_first = partitioned
    type_card_numbers(pipeline)
    first = pipeline.run()
    assert first.succeeded, f"{first.failed_stage}: {first.error}"
    assert first.results["transform"]["partitions"] == (3 if partitioned else 1)
    clock.at = NOW + timedelta(hours=1)
    change_the_org(pipeline)
    clock.at = NOW + timedelta(hours=2)
    second = pipeline.run()
    assert second.succeeded, f"{second.failed_stage}: {second.error}"
    clock.at = NOW + timedelta(hours=3)
    third = pipeline.run({"full_resync": True})  # every order read again: the load's no-op path
    assert third.succeeded, f"{third.failed_stage}: {third.error}"

    dump = dump_warehouse(
        pipeline.engine, pipeline.schema, run_labels([first.run_id, second.run_id, third.run_id]), {org.public_url: "https://org.example"}
    )
    assert not card_numbers_in(dump), "a card number reached the warehouse"  # nor may it reach the golden
    if REGENERATE and not partitioned and not _written_this_session:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        write_golden(dump, GOLDEN)
        _written_this_session.append(GOLDEN)
        return
    golden = read_golden(GOLDEN)
    if golden != dump:
        summary = "\n".join(f"  {name}: {table_digest(golden.get(name, {}))[:12]} -> {table_digest(table)[:12]}"
                            for name, table in dump.items() if golden.get(name) != table)
        report = "\n\n".join(differences(golden, dump))
        pytest.fail(f"the {pipeline.dialect} warehouse differs from {GOLDEN.name}:\n{summary}\n\n{report}", pytrace=False)


# -- The canonical dump ------------------------------------------------------------------------

# A set timestamp written from the import's own clock (load, quarantine, write-back, report
# times): whether it is set is kept, its value is not.
SET = "<set>"

# Timestamps that come from Salesforce (or from the org's data through the watermark) and are
# business values; every other timestamp column is the warehouse's own clock.
SALESFORCE_TIMESTAMPS = frozenset({"activated_at", "sf_created_at", "sf_system_modstamp"})

# Columns dropped outright: serial ids (their values follow the order rows were inserted in, which
# a rewritten load may change), durations, and import_runs' API-call count and usage ceiling (how
# the org was read, not what was produced).
DROPPED: Mapping[str, frozenset[str]] = {
    "*": frozenset({"id", "outbox_id"}),
    "import_runs": frozenset({"duration_seconds", "api_calls", "api_usage_ceiling"}),
}

# Columns naming a run: replaced by the run's label ("run1", ...) so the dump does not depend on
# the run ids a test made up.
RUN_ID_COLUMNS = frozenset({"run_id", "last_run_id", "created_run_id", "updated_run_id", "dag_run_id"})

# sync_state rows that are the process's own bookkeeping, not output: the views' DDL fingerprint
# (spelled differently by each dialect; the views themselves are dumped), the write-back's spans
# of its own writes (stamped from the import's wall clock) and when staging was last purged.
SYNC_STATE_LEFT_OUT = frozenset({"warehouse.views", "orders.own_writes", "retention.purged_at"})


@dataclass(frozen=True)
class Source:
    """One table or view to dump and the columns that identify a row (before the tie-break on the
    whole row, for tables whose key holds a normalised value such as a timestamp)."""

    name: str
    key: tuple[str, ...]


TABLES = (
    Source("customers", ("customer_id",)),
    Source("customer_locations", ("location_id",)),
    Source("external_orders", ("sf_order_id",)),
    Source("external_order_items", ("sf_order_item_id",)),
    Source("order_services", ("service_key",)),
    Source("products", ("sf_pricebook_entry_id", "currency")),
    Source("external_order_versions", ("sf_order_id", "run_id")),
    Source("external_order_item_versions", ("sf_order_item_id", "run_id")),
    Source("quarantined_orders", ("run_id", "sf_order_id")),
    Source("skipped_orders", ("run_id", "sf_order_id")),
    Source("writeback_outbox", ("sf_object", "sf_record_id", "action", "sf_order_id", "created_run_id")),
    Source("currency_rates", ("source", "iso_code", "start_date")),
    Source("order_shipments", ("shipment_key",)),
    Source("order_shipment_lines", ("shipment_key", "sf_order_item_id")),
    Source("import_runs", ("run_id",)),
    Source("sync_state", ("key",)),
)
VIEWS = (
    Source("v_orders_by_customer", ("customer_id", "currency")),
    Source("v_revenue_by_day", ("day", "currency")),
    Source("v_open_failures", ("sf_object", "sf_record_id", "action")),
    Source("v_quarantined_orders", ("run_id", "sf_order_id")),
    Source("v_multi_location_customers", ("customer_id",)),
)
# Staging (stg_*) is left out: it is the pipeline's scratch space between tasks, and the rewrite
# may change its shape freely.


def number_text(value: Decimal | float) -> str:
    """An amount or rate as its shortest exact decimal text. The dialects return the same amount
    as different types: PostgreSQL NUMERIC as a Decimal with the column's scale ("12.50"), SQLite
    REAL as the nearest double (12.5), whose shortest repr is the amount; both give "12.5"."""
    number = Decimal(repr(value)) if isinstance(value, float) else value
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0.0") else text


def canonical(value: Any, column: str, runs: Mapping[str, str], replacements: Mapping[str, str]) -> Any:
    """One value as plain JSON, volatile parts normalised."""
    if value is None:
        return None
    if column in RUN_ID_COLUMNS:
        return runs.get(value, "<other run>")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return number_text(value)
    if isinstance(value, datetime):
        return value.isoformat() if column in SALESFORCE_TIMESTAMPS else SET
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical(v, str(k), runs, replacements) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v, column, runs, replacements) for v in value]
    raise TypeError(f"{column}: no canonical form for {type(value).__name__} {value!r}")


# Hex digests, some of which are all digits and may even pass the Luhn check.
DIGESTS = frozenset({"content_hash", "location_id"})


def card_numbers_in(dump: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where the dump holds a card number: "table.column" of each text value the import's card
    masking would change."""
    from salesforce_orders.redaction import mask_card_numbers

    found = []
    for name, table in dump.items():
        for row in table["rows"]:
            for column, value in zip(table["columns"], row, strict=True):
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                if column not in DIGESTS and mask_card_numbers(text) != text:
                    found.append(f"{name}.{column}")
    return found


def _is_decimal(column_type: sa.types.TypeEngine) -> bool:
    return isinstance(column_type.impl if isinstance(column_type, sa.TypeDecorator) else column_type, sa.Numeric)


def _as_decimal(value: Any) -> Any:
    """A NUMERIC column's value as a number with decimals: SQLite gives back a whole REAL such as
    a conversion rate of 1.0 as the integer 1, PostgreSQL as 1.0; both are written "1"."""
    return Decimal(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _readable(engine: sa.Engine, schema: str | None, source: Source) -> sa.FromClause:
    """The table, or the view as a table whose columns carry the types of the view's definition
    (so each dialect's raw values come back as the same Python types)."""
    from salesforce_orders.warehouse import VIEWS as VIEW_DEFINITIONS
    from salesforce_orders.warehouse import tables

    t = tables(schema)
    if not source.name.startswith("v_"):
        return getattr(t, source.name)
    definition = VIEW_DEFINITIONS[source.name](t, engine.dialect.name)
    return sa.table(source.name, *(sa.column(c.name, c.type) for c in definition.selected_columns), schema=schema)


def dump_source(
    conn: sa.Connection, engine: sa.Engine, schema: str | None, source: Source,
    runs: Mapping[str, str], replacements: Mapping[str, str],
) -> dict[str, Any]:
    """``{"key": [...], "columns": [...], "rows": [[...], ...]}`` of one table or view."""
    table = _readable(engine, schema, source)
    dropped = DROPPED["*"] | DROPPED.get(source.name, frozenset())
    columns = sorted(c.name for c in table.columns if c.name not in dropped)
    decimals = {c.name for c in table.columns if _is_decimal(c.type)}
    rows = []
    for row in conn.execute(sa.select(*(table.c[name] for name in columns))).mappings():
        values = {name: canonical(_as_decimal(row[name]) if name in decimals else row[name], name, runs, replacements)
                  for name in columns}
        if source.name == "sync_state" and values["key"] in SYNC_STATE_LEFT_OUT:
            continue
        rows.append(values)
    rows.sort(key=lambda r: (json.dumps([r[k] for k in source.key]), json.dumps(r, sort_keys=True)))
    return {"key": list(source.key), "columns": columns, "rows": [[r[c] for c in columns] for r in rows]}


def dump_warehouse(
    engine: sa.Engine, schema: str | None, runs: Mapping[str, str], replacements: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Every table and view of ``TABLES`` and ``VIEWS``, canonical. ``runs``: run id → label;
    ``replacements``: volatile text (the org's URL) → what stands for it."""
    with engine.connect() as conn:
        return {s.name: dump_source(conn, engine, schema, s, runs, replacements) for s in (*TABLES, *VIEWS)}


def table_digest(table: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def write_golden(dump: Mapping[str, Mapping[str, Any]], path: Any) -> None:
    """JSON lines: per table, a header line (name, key, columns, row count, sha256), then one line per row."""
    lines = []
    for name, table in dump.items():
        header = {"table": name, "key": table["key"], "columns": table["columns"], "rows": len(table["rows"]),
                  "sha256": table_digest(table)}
        lines.append(json.dumps(header, ensure_ascii=False))
        lines.extend(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in table["rows"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_golden(path: Any) -> dict[str, dict[str, Any]]:
    dump: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        value = json.loads(line)
        if isinstance(value, dict):
            current = {"key": value["key"], "columns": value["columns"], "rows": []}
            dump[value["table"]] = current
        else:
            current["rows"].append(value)
    return dump


def differences(expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]], *, limit: int = 5) -> list[str]:
    """What differs, readably: per table, columns added or removed, row counts, and the first
    ``limit`` rows that differ (by natural key) with the values that changed."""
    report: list[str] = []
    for name in [*expected, *(n for n in actual if n not in expected)]:
        if name not in actual or name not in expected:
            report.append(f"{name}: {'missing from the new output' if name not in actual else 'not in the golden'}")
            continue
        old, new = expected[name], actual[name]
        if old == new:
            continue
        lines = [f"{name}: {len(old['rows'])} rows in the golden, {len(new['rows'])} now"]
        if old["columns"] != new["columns"]:
            lines.append(f"  columns removed: {sorted(set(old['columns']) - set(new['columns']))}, "
                         f"added: {sorted(set(new['columns']) - set(old['columns']))}")
        old_rows, new_rows = _by_key(old), _by_key(new)
        shown = 0
        for key in sorted(set(old_rows) | set(new_rows)):
            before, after = old_rows.get(key), new_rows.get(key)
            if before == after:
                continue
            if shown == limit:
                lines.append("  ...")
                break
            shown += 1
            if before is None or after is None:
                lines.append(f"  {key}: {'only in the golden' if after is None else 'only now'}: "
                             f"{json.dumps(before or after, ensure_ascii=False)}")
                continue
            changed = {c: (before.get(c), after.get(c)) for c in sorted(set(before) | set(after)) if before.get(c) != after.get(c)}
            lines.append(f"  {key}:")
            lines.extend(f"      {c}: {json.dumps(b, ensure_ascii=False)} -> {json.dumps(a, ensure_ascii=False)}"
                         for c, (b, a) in changed.items())
        report.append("\n".join(lines))
    return report


def _by_key(table: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows by natural key (a repeated key gets its position appended, so no row hides another)."""
    rows: dict[str, dict[str, Any]] = {}
    for values in table["rows"]:
        row = dict(zip(table["columns"], values, strict=True))
        key = json.dumps([row.get(k) for k in table["key"]], ensure_ascii=False)
        n, unique = 1, key
        while unique in rows:
            n += 1
            unique = f"{key} #{n}"
        rows[unique] = row
    return rows


def run_labels(run_ids: Iterable[str]) -> dict[str, str]:
    return {run_id: f"run{n}" for n, run_id in enumerate(run_ids, start=1)}

