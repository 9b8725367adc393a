"""The SOQL engine against a small hand-made org in an in-memory SQLite database."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from salesforce_sandbox.ddl import create_tables, quote_ident
from salesforce_sandbox.schema import Field, Schema, SObject, build_schema
from salesforce_sandbox.soql import QueryEngine

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)  # today = 2026-01-15 (UTC)
SCHEMA = build_schema()


def insert(conn: sqlite3.Connection, table: str, **values) -> None:
    values.setdefault("IsDeleted", 0)
    columns = ", ".join(quote_ident(name) for name in values)
    placeholders = ", ".join("?" * len(values))
    conn.execute(
        f"INSERT INTO {quote_ident(table)} ({columns}) VALUES ({placeholders})", list(values.values())
    )


# Today is 2026-01-15: 801B is from yesterday, 801C from today, 801D is in the recycle bin.
ORDERS = [
    ("801A", "Alpha", "001A", "Activated", "2026-01-10", "2026-01-10T08:00:00.000+0000", 100, 0),
    ("801B", "bravo", "001B", "Draft", "2026-01-14", "2026-01-14T23:30:00.000+0000", 20.5, 0),
    ("801C", None, None, "Activated", "2026-01-15", "2026-01-15T00:00:00.000+0000", None, 0),
    ("801D", "Charlie", "001A", "Activated", "2026-01-15", "2026-01-15T09:00:00.000+0000", 5, 1),
    ("801E", "100% pure_x", "001B", "Activated", "2025-12-01", "2025-12-01T10:00:00.000+0000", 0, 0),
]


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    create_tables(conn, SCHEMA)
    insert(conn, "Account", Id="001P", Name="Parent Co")
    insert(conn, "Account", Id="001A", Name="acme", ParentId="001P")
    insert(conn, "Account", Id="001B", Name="Beta")
    insert(conn, "Product2", Id="01tW", Name="Widget", IsActive=1)
    for number, (order_id, name, account, status, effective, created, total, deleted) in enumerate(ORDERS, 1):
        insert(
            conn,
            "Order",
            Id=order_id,
            Name=name,
            AccountId=account,
            Status=status,
            EffectiveDate=effective,
            CreatedDate=created,
            TotalAmount=total,
            IsDeleted=deleted,
            OrderNumber=f"{number:08d}",
            CurrencyIsoCode="USD",
        )
    item = {"PricebookEntryId": "01uW", "UnitPrice": 10}
    insert(conn, "OrderItem", Id="802A1", OrderId="801A", Quantity=1, Product2Id="01tW", **item)
    insert(conn, "OrderItem", Id="802A2", OrderId="801A", Quantity=3, Product2Id=None, **item)
    insert(conn, "OrderItem", Id="802A3", OrderId="801A", Quantity=2, IsDeleted=1, **item)
    insert(conn, "OrderItem", Id="802B1", OrderId="801B", Quantity=5, **item)
    insert(conn, "OrderItem", Id="802D1", OrderId="801D", Quantity=1, **item)
    conn.commit()
    return conn


@pytest.fixture
def engine(conn) -> QueryEngine:
    return QueryEngine(conn, SCHEMA)


def ids(engine: QueryEngine, soql: str, **options) -> list[str]:
    options.setdefault("now", NOW)
    return engine.prepare(soql, **options).ids()


def where(engine: QueryEngine, condition: str, **options) -> list[str]:
    """Matching Order Ids, in Id order, for a WHERE condition."""
    return ids(engine, f"SELECT Id FROM Order WHERE {condition} ORDER BY Id", **options)


def url(object_name: str, record_id: str) -> str:
    return f"/services/data/v59.0/sobjects/{object_name}/{record_id}"


# -- records --------------------------------------------------------------------------------


def test_parent_paths_nest_and_empty_lookups_are_null(engine):
    query = engine.prepare(
        "SELECT id, name, ACCOUNT.name, Account.Parent.Name FROM order ORDER BY Id", now=NOW
    )
    assert query.object_name == "Order"
    records = query.fetch(query.ids())
    assert [r["Id"] for r in records] == ["801A", "801B", "801C", "801E"]
    assert records[0] == {
        "attributes": {"type": "Order", "url": url("Order", "801A")},
        "Id": "801A",
        "Name": "Alpha",
        "Account": {
            "attributes": {"type": "Account", "url": url("Account", "001A")},
            "Name": "acme",
            "Parent": {"attributes": {"type": "Account", "url": url("Account", "001P")}, "Name": "Parent Co"},
        },
    }
    assert records[1]["Account"]["Parent"] is None
    assert records[2]["Name"] is None and records[2]["Account"] is None


def test_values_are_json_types(engine):
    query = engine.prepare(
        "SELECT IsDeleted, TotalAmount, EffectiveDate, CreatedDate, (SELECT Quantity FROM OrderItems) "
        "FROM Order WHERE Id IN ('801A', '801D', '801C')",
        include_deleted=True,
        now=NOW,
    )
    by_id = {r["attributes"]["url"][-4:]: r for r in query.fetch(query.ids())}
    assert by_id["801A"]["IsDeleted"] is False and by_id["801D"]["IsDeleted"] is True
    assert by_id["801A"]["TotalAmount"] == 100.0 and isinstance(by_id["801A"]["TotalAmount"], float)
    assert by_id["801C"]["TotalAmount"] is None
    assert by_id["801A"]["EffectiveDate"] == "2026-01-10"
    assert by_id["801A"]["CreatedDate"] == "2026-01-10T08:00:00.000+0000"
    quantities = [item["Quantity"] for item in by_id["801A"]["OrderItems"]["records"]]
    assert quantities == [1.0, 3.0, 2.0] and all(isinstance(q, float) for q in quantities)


def test_fetch_follows_the_requested_order_and_skips_unknown_ids(engine):
    query = engine.prepare("SELECT Id FROM Order", now=NOW)
    assert [r["Id"] for r in query.fetch(["801E", "nope", "801A"])] == ["801E", "801A"]
    assert query.fetch([]) == []


# -- child subqueries -----------------------------------------------------------------------


def test_child_subquery_records_and_null_when_no_children(engine):
    query = engine.prepare(
        "SELECT Id, (SELECT Id, Quantity, Product2.Name FROM OrderItems) FROM Order ORDER BY Id", now=NOW
    )
    assert query.has_subqueries
    records = {r["Id"]: r for r in query.fetch(query.ids())}
    assert records["801A"]["OrderItems"] == {
        "totalSize": 2,
        "done": True,
        "records": [
            {
                "attributes": {"type": "OrderItem", "url": url("OrderItem", "802A1")},
                "Id": "802A1",
                "Quantity": 1.0,
                "Product2": {
                    "attributes": {"type": "Product2", "url": url("Product2", "01tW")},
                    "Name": "Widget",
                },
            },
            {
                "attributes": {"type": "OrderItem", "url": url("OrderItem", "802A2")},
                "Id": "802A2",
                "Quantity": 3.0,
                "Product2": None,
            },
        ],
    }
    assert [i["Id"] for i in records["801B"]["OrderItems"]["records"]] == ["802B1"]
    assert records["801C"]["OrderItems"] is None


def test_child_subquery_where_order_and_limit_apply_per_parent(engine):
    query = engine.prepare(
        "SELECT Id, (SELECT Id FROM OrderItems WHERE Quantity >= 1 ORDER BY Quantity DESC LIMIT 1) FROM Order",
        include_deleted=True,
        now=NOW,
    )
    records = {r["Id"]: r["OrderItems"] for r in query.fetch(query.ids())}
    assert [i["Id"] for i in records["801A"]["records"]] == ["802A2"]
    assert records["801A"]["totalSize"] == 1
    assert [i["Id"] for i in records["801B"]["records"]] == ["802B1"]
    assert [i["Id"] for i in records["801D"]["records"]] == ["802D1"]


def test_deleted_children_only_with_include_deleted(engine):
    soql = "SELECT Id, (SELECT Id FROM OrderItems ORDER BY Id) FROM Order WHERE Id = '801A'"
    visible = engine.prepare(soql, now=NOW)
    assert [i["Id"] for i in visible.fetch(visible.ids())[0]["OrderItems"]["records"]] == ["802A1", "802A2"]
    everything = engine.prepare(soql, include_deleted=True, now=NOW)
    assert [i["Id"] for i in everything.fetch(everything.ids())[0]["OrderItems"]["records"]] == [
        "802A1",
        "802A2",
        "802A3",
    ]


def test_child_to_parent_query_from_the_child(engine):
    query = engine.prepare(
        "SELECT Id, Order.OrderNumber, Order.Account.Name FROM OrderItem ORDER BY Id", now=NOW
    )
    assert not query.has_subqueries
    assert query.fetch_flat(query.ids()) == [
        ["802A1", "00000001", "acme"],
        ["802A2", "00000001", "acme"],
        ["802B1", "00000002", "Beta"],
        ["802D1", "00000004", "acme"],
    ]


# -- deleted rows ---------------------------------------------------------------------------


def test_deleted_rows_only_with_include_deleted(engine):
    assert "801D" not in ids(engine, "SELECT Id FROM Order")
    assert "801D" in ids(engine, "SELECT Id FROM Order", include_deleted=True)
    assert where(engine, "IsDeleted = true") == []
    assert where(engine, "IsDeleted = true", include_deleted=True) == ["801D"]
    assert where(engine, "IsDeleted = false", include_deleted=True) == ["801A", "801B", "801C", "801E"]


# -- COUNT ----------------------------------------------------------------------------------


def test_count_only(engine):
    query = engine.prepare("SELECT COUNT() FROM Order WHERE Status = 'Activated'", now=NOW)
    assert query.is_aggregate and query.is_count_only
    assert query.count() == 3
    assert query.ids() == [] and query.aggregate_records() == []
    assert engine.prepare("SELECT COUNT() FROM Order", include_deleted=True, now=NOW).count() == 5
    assert engine.prepare("SELECT COUNT() FROM Order LIMIT 2", now=NOW).count() == 2


def test_count_of_a_field(engine):
    query = engine.prepare("SELECT COUNT(Id), COUNT(Account.Name) named, COUNT(Name) FROM Order", now=NOW)
    assert query.is_aggregate and not query.is_count_only
    assert query.aggregate_records() == [
        {"attributes": {"type": "AggregateResult"}, "expr0": 4, "named": 3, "expr1": 3}
    ]
    assert query.count() == 1
    assert query.columns() == ["expr0", "named", "expr1"]
    with pytest.raises(TypeError):
        query.fetch(["801A"])


def test_plain_queries_are_not_aggregates(engine):
    query = engine.prepare("SELECT Id FROM Order", now=NOW)
    assert not query.is_aggregate and not query.is_count_only
    assert query.aggregate_records() == []


# -- ORDER BY, LIMIT, OFFSET ----------------------------------------------------------------


def test_order_by_defaults_to_nulls_first_and_ignores_case(engine):
    # acme < Beta only when case is ignored; 801C has no Account and comes first.
    assert ids(engine, "SELECT Id FROM Order ORDER BY Account.Name") == ["801C", "801A", "801B", "801E"]
    assert ids(engine, "SELECT Id FROM Order ORDER BY Account.Name NULLS LAST") == [
        "801A",
        "801B",
        "801E",
        "801C",
    ]
    assert ids(engine, "SELECT Id FROM Order ORDER BY Name") == ["801C", "801E", "801A", "801B"]
    assert ids(engine, "SELECT Id FROM Order ORDER BY Name DESC") == ["801C", "801B", "801A", "801E"]
    assert ids(engine, "SELECT Id FROM Order ORDER BY Name DESC NULLS LAST") == [
        "801B",
        "801A",
        "801E",
        "801C",
    ]


def test_order_by_several_keys(engine):
    assert ids(engine, "SELECT Id FROM Order ORDER BY Status DESC, TotalAmount DESC NULLS LAST") == [
        "801B",
        "801A",
        "801E",
        "801C",
    ]


def test_limit_and_offset(engine):
    query = engine.prepare("SELECT Id FROM Order ORDER BY OrderNumber LIMIT 2 OFFSET 1", now=NOW)
    assert query.ids() == ["801B", "801C"]
    assert query.count() == 2
    assert ids(engine, "SELECT Id FROM Order ORDER BY OrderNumber OFFSET 3") == ["801E"]
    assert ids(engine, "SELECT Id FROM Order LIMIT 0") == []
    assert engine.prepare("SELECT Id FROM Order OFFSET 10", now=NOW).count() == 0


# -- WHERE ----------------------------------------------------------------------------------


def test_string_comparison_ignores_case(engine):
    assert where(engine, "Name = 'ALPHA'") == ["801A"]
    assert where(engine, "Account.Name = 'ACME'") == ["801A"]
    assert where(engine, "Name > 'B'") == ["801B"]


def test_not_equal_and_not_include_null_values(engine):
    assert where(engine, "Name != 'alpha'") == ["801B", "801C", "801E"]
    assert where(engine, "Name <> 'alpha'") == ["801B", "801C", "801E"]
    assert where(engine, "NOT Name = 'alpha'") == ["801B", "801C", "801E"]
    assert where(engine, "(NOT Name LIKE 'a%')") == ["801B", "801C", "801E"]


def test_null_comparisons(engine):
    assert where(engine, "Name = null") == ["801C"]
    assert where(engine, "AccountId != null") == ["801A", "801B", "801E"]
    assert where(engine, "Account.Parent.Name = null") == ["801B", "801C", "801E"]


def test_number_comparisons(engine):
    assert where(engine, "TotalAmount > 20") == ["801A", "801B"]
    assert where(engine, "TotalAmount <= 20.5") == ["801B", "801E"]
    assert where(engine, "TotalAmount = 0") == ["801E"]


def test_like_wildcards_and_escapes(engine):
    assert where(engine, "Name LIKE 'AL%'") == ["801A"]
    assert where(engine, "Name LIKE '_ravo'") == ["801B"]
    assert where(engine, r"Name LIKE '100\%%'") == ["801E"]
    assert where(engine, r"Name LIKE '%\_%'") == ["801E"]
    assert where(engine, "Name LIKE '%_%'") == ["801A", "801B", "801E"]
    assert where(engine, r"Name LIKE '1_0\% pure\_x'") == ["801E"]


def test_in_and_not_in(engine):
    assert where(engine, "Status IN ('activated')") == ["801A", "801C", "801E"]
    assert where(engine, "Name IN ('alpha', 'Bravo')") == ["801A", "801B"]
    assert where(engine, "Name IN ('alpha', null)") == ["801A", "801C"]
    assert where(engine, "Name NOT IN ('alpha', 'BRAVO')") == ["801C", "801E"]
    assert where(engine, "Name NOT IN ('alpha', null)") == ["801B", "801E"]
    assert where(engine, "Id IN ('801A', '801E')") == ["801A", "801E"]


def test_an_id_matches_in_its_15_and_18_character_forms_as_in_a_real_org(conn, engine):
    """A 15-character Id finds the record whose 18-character Id starts with it, case-sensitively
    (two Ids differing only in case are two records); an 18-character Id's suffix is compared
    case-insensitively. The same for a lookup field, in =, !=, IN and NOT IN."""
    upper, lower = "801000000000ABCAA2", "801000000000aBcAAI"  # 15 characters differing only in case
    for order_id in (upper, lower):
        insert(conn, "Order", Id=order_id, Name=order_id, AccountId="001A", Status="Activated")
        insert(conn, "OrderItem", Id=f"802{order_id[3:]}", OrderId=order_id, Quantity=1, UnitPrice=1)
    every = ["801A", "801B", "801C", "801E"]

    assert where(engine, f"Id IN ('{upper[:15]}')") == [upper]
    assert where(engine, f"Id = '{lower[:15]}'") == [lower]
    assert where(engine, f"Id IN ('{upper[:15]}', '{lower}', '801A')") == [upper, lower, "801A"]
    assert where(engine, f"Id = '{upper[:15]}aa2'") == [upper]  # the suffix in lower case
    assert where(engine, f"Id = '{upper[:15].lower()}AA2'") == []  # the first 15 are case-sensitive
    assert where(engine, f"Id = '{upper[:15]}AAA'") == []  # a suffix that does not fit them
    assert where(engine, f"Id != '{upper[:15]}'") == [lower, *every]
    assert where(engine, f"Id NOT IN ('{lower[:15]}', '801A')") == [upper, *every[1:]]
    items = f"SELECT Id FROM OrderItem WHERE OrderId IN ('{lower[:15]}') AND Order.Id = '{lower[:15]}'"
    assert ids(engine, items) == [f"802{lower[3:]}"]


def test_and_or_not_with_parentheses(engine):
    assert where(engine, "Status = 'Activated' AND (Name = 'Alpha' OR Name = null)") == ["801A", "801C"]
    assert where(engine, "(Status = 'Draft' AND Name = 'bravo') OR TotalAmount = 0") == ["801B", "801E"]
    assert where(engine, "NOT (Status = 'Activated' AND TotalAmount > 10)") == ["801B", "801C", "801E"]


def test_semi_join_and_anti_join(engine):
    assert where(engine, "Id IN (SELECT OrderId FROM OrderItem WHERE Quantity > 2)") == ["801A", "801B"]
    # 802A3 (Quantity 2) is deleted: it only counts with include_deleted.
    assert where(engine, "Id IN (SELECT OrderId FROM OrderItem WHERE Quantity = 2)") == []
    assert where(
        engine, "Id IN (SELECT OrderId FROM OrderItem WHERE Quantity = 2)", include_deleted=True
    ) == ["801A"]
    assert where(engine, "Id NOT IN (SELECT OrderId FROM OrderItem)") == ["801C", "801E"]
    assert where(engine, "AccountId IN (SELECT Id FROM Account WHERE ParentId != null)") == ["801A"]
    assert where(engine, "AccountId NOT IN (SELECT Id FROM Account WHERE Name = 'acme')") == [
        "801B",
        "801C",
        "801E",
    ]


# -- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("EffectiveDate = TODAY", ["801C"]),
        ("EffectiveDate = YESTERDAY", ["801B"]),
        ("EffectiveDate != YESTERDAY", ["801A", "801C", "801E"]),
        ("EffectiveDate > YESTERDAY", ["801C"]),
        ("EffectiveDate >= YESTERDAY", ["801B", "801C"]),
        ("EffectiveDate < YESTERDAY", ["801A", "801E"]),
        ("EffectiveDate <= YESTERDAY", ["801A", "801B", "801E"]),
        ("EffectiveDate = LAST_N_DAYS:1", ["801B", "801C"]),
        ("EffectiveDate = LAST_N_DAYS:5", ["801A", "801B", "801C"]),
        ("EffectiveDate = N_DAYS_AGO:5", ["801A"]),
        ("EffectiveDate < TOMORROW", ["801A", "801B", "801C", "801E"]),
        ("EffectiveDate = NEXT_N_DAYS:3", []),
        ("CreatedDate = TODAY", ["801C"]),
        ("CreatedDate = YESTERDAY", ["801B"]),
        ("CreatedDate >= YESTERDAY", ["801B", "801C"]),
        ("CreatedDate < TODAY", ["801A", "801B", "801E"]),
        ("CreatedDate <= YESTERDAY", ["801A", "801B", "801E"]),
        ("CreatedDate = LAST_N_DAYS:5", ["801A", "801B", "801C"]),
    ],
)
def test_date_literals_are_utc_day_ranges(engine, condition, expected):
    assert where(engine, condition) == expected


def test_date_literals_follow_now(engine):
    # 23:00 on the 10th at UTC-5 is already the 11th in UTC, so yesterday is the 10th.
    later = dt.datetime(2026, 1, 10, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert where(engine, "EffectiveDate = YESTERDAY", now=later) == ["801A"]


def test_date_literal_comparison(engine):
    assert where(engine, "EffectiveDate >= 2026-01-14") == ["801B", "801C"]
    assert where(engine, "EffectiveDate = 2026-01-10") == ["801A"]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("CreatedDate > 2026-01-15T00:30:00+01:00", ["801C"]),  # = 2026-01-14T23:30Z, strictly after
        ("CreatedDate >= 2026-01-15T00:30:00+01:00", ["801B", "801C"]),
        ("CreatedDate = 2026-01-14T15:30:00-08:00", ["801B"]),
        ("CreatedDate = 2026-01-14T23:30:00Z", ["801B"]),
        ("CreatedDate = 2026-01-14T23:30:00.000+0000", ["801B"]),
        ("CreatedDate < 2026-01-10T08:00:00.001Z", ["801A", "801E"]),
        ("CreatedDate > 2026-01-10T08:00:00.001Z", ["801B", "801C"]),
    ],
)
def test_datetime_literals_compare_in_utc(engine, condition, expected):
    assert where(engine, condition) == expected


# -- multi-select picklists (a small org that has one) --------------------------------------


def _thing_schema() -> Schema:
    fields = (
        Field("Id", "id", length=18),
        Field("Name", "string", length=80),
        Field("Tags__c", "multipicklist", length=4099),
        Field("Rank__c", "int"),
        Field("IsDeleted", "boolean"),
    )
    return Schema({"Thing": SObject("Thing", "a00", fields)})


@pytest.fixture
def things() -> QueryEngine:
    schema = _thing_schema()
    conn = sqlite3.connect(":memory:")
    create_tables(conn, schema)
    for record_id, tags, rank in [
        ("a01", "a;b;c", 3),
        ("a02", "b", 1),
        ("a03", "c;d", 2),
        ("a04", None, None),
    ]:
        insert(conn, "Thing", Id=record_id, Name=record_id, Tags__c=tags, Rank__c=rank)
    return QueryEngine(conn, schema)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("Tags__c INCLUDES ('a')", ["a01"]),
        ("Tags__c INCLUDES ('B')", ["a01", "a02"]),
        ("Tags__c INCLUDES ('a;b', 'd')", ["a01", "a03"]),
        ("Tags__c INCLUDES ('b;d')", []),
        ("Tags__c EXCLUDES ('b')", ["a03", "a04"]),
        ("Tags__c EXCLUDES ('a;b', 'd')", ["a02", "a04"]),
        ("Tags__c = 'b'", ["a02"]),
    ],
)
def test_includes_and_excludes(things, condition, expected):
    assert ids(things, f"SELECT Id FROM Thing WHERE {condition} ORDER BY Id") == expected


def test_int_fields_come_back_as_int(things):
    query = things.prepare("SELECT Name, Rank__c FROM Thing WHERE Rank__c >= 2 ORDER BY Rank__c DESC")
    rows = query.fetch_flat(query.ids())
    assert rows == [["a01", 3], ["a03", 2]]
    assert all(type(row[1]) is int for row in rows)


# -- flat rows for Bulk ---------------------------------------------------------------------


def test_columns_and_flat_rows(engine):
    query = engine.prepare(
        "SELECT Id, Account.Parent.Name, OrderNumber, Account.Name, IsDeleted FROM Order ORDER BY Id", now=NOW
    )
    assert query.columns() == ["Id", "Account.Parent.Name", "OrderNumber", "Account.Name", "IsDeleted"]
    assert query.fetch_flat(query.ids()) == [
        ["801A", "Parent Co", "00000001", "acme", False],
        ["801B", None, "00000002", "Beta", False],
        ["801C", None, "00000003", None, False],
        ["801E", None, "00000005", "Beta", False],
    ]
    assert query.fetch_flat([]) == []


# -- scale ----------------------------------------------------------------------------------


def test_twenty_thousand_orders_with_three_items_each():
    conn = sqlite3.connect(":memory:")
    create_tables(conn, SCHEMA)
    orders = 20_000
    conn.executemany(
        'INSERT INTO "Account" ("Id", "Name", "IsDeleted") VALUES (?, ?, 0)',
        [(f"001{n:015d}", f"Account {n}") for n in range(100)],
    )
    conn.executemany(
        'INSERT INTO "Order" ("Id", "AccountId", "OrderNumber", "Status", "SystemModstamp", "IsDeleted") '
        "VALUES (?, ?, ?, 'Activated', ?, 0)",
        [
            (f"801{n:015d}", f"001{n % 100:015d}", f"{n:08d}", f"2026-01-01T00:{n % 60:02d}:00.000+0000")
            for n in range(orders)
        ],
    )
    conn.executemany(
        'INSERT INTO "OrderItem" ("Id", "OrderId", "Quantity", "IsDeleted") VALUES (?, ?, 1, 0)',
        [(f"802{n:015d}", f"801{n // 3:015d}") for n in range(orders * 3)],
    )
    query = QueryEngine(conn, SCHEMA).prepare(
        "SELECT Id, OrderNumber, Account.Name, (SELECT Id, Quantity FROM OrderItems) FROM Order "
        "WHERE Status = 'Activated' ORDER BY SystemModstamp",
        now=NOW,
    )
    snapshot = query.ids()
    assert len(snapshot) == query.count() == orders
    fetched, items = 0, 0
    for start in range(0, len(snapshot), 2000):
        page = query.fetch(snapshot[start : start + 2000])
        assert [r["Id"] for r in page] == snapshot[start : start + 2000]
        fetched += len(page)
        items += sum(r["OrderItems"]["totalSize"] for r in page)
    assert (fetched, items) == (orders, orders * 3)
    assert len(query.fetch_flat(snapshot[:5000])) == 5000
