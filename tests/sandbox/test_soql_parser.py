"""The SOQL parser: every grammar feature, and every error with its code and position.

Errors that need the schema (unknown object, field, relationship; literal types) are raised
by ``QueryEngine.prepare`` and tested here too, against empty tables.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from salesforce_sandbox.ddl import create_tables
from salesforce_sandbox.errors import SalesforceError
from salesforce_sandbox.schema import build_schema
from salesforce_sandbox.soql import QueryEngine, parse
from salesforce_sandbox.soql.ast import (
    And,
    Comparison,
    Count,
    DateRange,
    FieldPath,
    LiteralKind,
    Membership,
    Not,
    Or,
    OrderKey,
    SemiJoin,
    SubQuery,
)

UTC = dt.UTC


@pytest.fixture(scope="module")
def engine() -> QueryEngine:
    conn = sqlite3.connect(":memory:")
    schema = build_schema()
    create_tables(conn, schema)
    return QueryEngine(conn, schema)


def where_of(condition_text: str, obj: str = "Order"):
    return parse(f"SELECT Id FROM {obj} WHERE {condition_text}").where


def literal_of(value_text: str):
    return where_of(f"Name = {value_text}").value


def expect_error(action, code: str, soql: str, at: str, reason: str) -> SalesforceError:
    """Run ``action(soql)`` and check the error code, the Salesforce layout pointing at the
    first ``at`` in the query, and the reason."""
    with pytest.raises(SalesforceError) as caught:
        action(soql)
    error = caught.value
    offset = soql.index(at)
    row = soql.count("\n", 0, offset) + 1
    column = offset - (soql.rfind("\n", 0, offset) + 1) + 1
    line = soql.split("\n")[row - 1]
    assert error.error_code == code, error.message
    assert error.status == 400
    assert error.message == f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{reason}"
    return error


def syntax_error(
    soql: str, at: str, reason: str | None = None, code: str = "MALFORMED_QUERY"
) -> SalesforceError:
    return expect_error(parse, code, soql, at, reason or f"unexpected token: '{at}'")


# -- select list ----------------------------------------------------------------------------


def test_plain_fields_and_dotted_paths_keep_their_spelling_and_offsets():
    soql = "SELECT Id, orderNumber, Account.Parent.Name FROM Order"
    query = parse(soql)
    assert query.select == (
        FieldPath(("Id",), soql.index("Id")),
        FieldPath(("orderNumber",), soql.index("orderNumber")),
        FieldPath(("Account", "Parent", "Name"), soql.index("Account")),
    )
    assert (query.object_name, query.object_offset) == ("Order", soql.rindex("Order"))
    assert query.where is None and query.order_by == () and query.limit is None and query.offset is None


def test_keywords_are_case_insensitive_and_whitespace_free_form():
    soql = "select\n  Id\r\n\tfrom Order\nwhere Name = 'x'\norder by Name desc nulls last limit 5 offset 1"
    query = parse(soql)
    assert query.select == (FieldPath(("Id",), soql.index("Id")),)
    assert isinstance(query.where, Comparison)
    assert query.order_by == (
        OrderKey(FieldPath(("Name",), soql.rindex("Name")), descending=True, nulls_last=True),
    )
    assert (query.limit.value, query.offset.value) == (5, 1)


def test_order_is_an_object_and_a_relationship_not_only_a_keyword():
    query = parse("SELECT Order.OrderNumber FROM OrderItem ORDER BY Order.OrderNumber")
    assert query.select[0].parts == ("Order", "OrderNumber")
    assert query.order_by[0].field.parts == ("Order", "OrderNumber")


def test_child_subquery_with_its_own_clauses():
    query = parse(
        "SELECT Id, (SELECT Id, Product2.Name FROM OrderItems WHERE Quantity > 1 ORDER BY Quantity DESC LIMIT 3) "
        "FROM Order"
    )
    sub = query.select[1]
    assert isinstance(sub, SubQuery)
    assert sub.query.object_name == "OrderItems"
    assert sub.query.select[1].parts == ("Product2", "Name")
    assert isinstance(sub.query.where, Comparison) and sub.query.where.operator == ">"
    assert sub.query.order_by[0].descending is True
    assert sub.query.limit.value == 3


def test_count_forms():
    assert parse("SELECT COUNT() FROM Order").select == (Count(None, None, 7),)
    query = parse("SELECT count(Id), COUNT(Account.Name) names FROM Order")
    assert query.select == (
        Count(FieldPath(("Id",), 13), None, 7),
        Count(FieldPath(("Account", "Name"), 24), "names", 18),
    )


# -- WHERE ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "operator"),
    [("=", "="), ("!=", "!="), ("<>", "!="), ("<", "<"), ("<=", "<="), (">", ">"), (">=", ">=")],
)
def test_comparison_operators(written, operator):
    condition = where_of(f"Name {written} 'x'")
    assert isinstance(condition, Comparison)
    assert condition.operator == operator
    assert condition.field == FieldPath(("Name",), 27)
    assert condition.value.value == "x"


def test_like_keeps_escaped_wildcards_apart_from_real_ones():
    condition = where_of(r"Name LIKE 'a\%b%\_c_'")
    assert condition.operator == "LIKE"
    assert condition.value.value == "a%b%_c_"
    assert condition.value.escaped_wildcards == frozenset({1, 4})


def test_in_and_not_in_lists():
    condition = where_of("Status IN ('Draft', 'Activated')")
    assert isinstance(condition, Membership) and condition.operator == "IN"
    assert [v.value for v in condition.values] == ["Draft", "Activated"]
    assert where_of("Status NOT IN ('Draft')").operator == "NOT IN"


def test_includes_and_excludes():
    condition = where_of("Tags__c INCLUDES ('a;b', 'c')")
    assert condition.operator == "INCLUDES"
    assert [v.value for v in condition.values] == ["a;b", "c"]
    assert where_of("Tags__c excludes ('a')").operator == "EXCLUDES"


def test_semi_join_and_anti_join():
    condition = where_of("Id IN (SELECT OrderId FROM OrderItem WHERE Quantity > 2)")
    assert isinstance(condition, SemiJoin) and condition.negated is False
    assert condition.query.object_name == "OrderItem"
    assert condition.query.select == (FieldPath(("OrderId",), 41),)
    assert where_of("Id NOT IN (SELECT OrderId FROM OrderItem)").negated is True


def test_and_or_chains_and_parentheses():
    condition = where_of("Name = 'a' AND Status = 'b' AND Type = 'c'")
    assert isinstance(condition, And) and len(condition.operands) == 3
    condition = where_of("(Name = 'a' AND Status = 'b') OR Type = 'c'")
    assert isinstance(condition, Or)
    assert isinstance(condition.operands[0], And)
    condition = where_of("Name = 'a' AND (Status = 'b' OR (Type = 'c'))")
    assert isinstance(condition.operands[1], Or)


@pytest.mark.parametrize("text", ["NOT Name = 'y'", "(NOT Name = 'y')", "not Name = 'y'"])
def test_not_forms(text):
    condition = where_of(text)
    assert isinstance(condition, Not)
    assert isinstance(condition.operand, Comparison) and condition.operand.value.value == "y"


def test_not_binds_to_the_next_condition_only():
    condition = where_of("NOT Name = 'a' AND Status = 'b'")
    assert isinstance(condition, And)
    assert isinstance(condition.operands[0], Not)
    assert isinstance(condition.operands[1], Comparison)


# -- literals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "decoded"),
    [
        (r"\n", "\n"),
        (r"\N", "\n"),
        (r"\r", "\r"),
        (r"\R", "\r"),
        (r"\t", "\t"),
        (r"\T", "\t"),
        (r"\b", "\b"),
        (r"\B", "\b"),
        (r"\f", "\f"),
        (r"\F", "\f"),
        (r"\"", '"'),
        (r"\'", "'"),
        (r"\\", "\\"),
        (r"\u00e9", "é"),
        (r"\u20AC", "€"),
    ],
)
def test_string_escapes(written, decoded):
    assert literal_of(f"'a{written}z'").value == f"a{decoded}z"


def test_constants_are_case_insensitive():
    assert (literal_of("null").kind, literal_of("null").value) == (LiteralKind.NULL, None)
    assert (literal_of("TRUE").kind, literal_of("TRUE").value) == (LiteralKind.BOOLEAN, True)
    assert (literal_of("False").kind, literal_of("False").value) == (LiteralKind.BOOLEAN, False)


@pytest.mark.parametrize(
    ("text", "value"), [("42", 42), ("-7", -7), ("+3", 3), ("12.50", 12.5), ("-0.25", -0.25)]
)
def test_numbers(text, value):
    literal = literal_of(text)
    assert literal.kind is LiteralKind.NUMBER
    assert literal.value == value and type(literal.value) is type(value)


def test_unquoted_date():
    literal = literal_of("2026-02-28")
    assert (literal.kind, literal.value) == (LiteralKind.DATE, dt.date(2026, 2, 28))


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T01:30:00+01:00", dt.datetime(2026, 1, 1, 0, 30, tzinfo=UTC)),
        ("2025-12-31T16:00:00-08:00", dt.datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00+0000", dt.datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.250Z", dt.datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-01T00:00:00.000+0000", dt.datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_datetimes_are_read_in_utc(text, utc):
    literal = literal_of(text)
    assert literal.kind is LiteralKind.DATETIME
    assert literal.value == utc and literal.value.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TODAY", DateRange("TODAY", 0, 0)),
        ("yesterday", DateRange("YESTERDAY", -1, -1)),
        ("TOMORROW", DateRange("TOMORROW", 1, 1)),
        ("LAST_N_DAYS:7", DateRange("LAST_N_DAYS:7", -7, 0)),
        ("NEXT_N_DAYS:3", DateRange("NEXT_N_DAYS:3", 1, 3)),
        ("N_DAYS_AGO:30", DateRange("N_DAYS_AGO:30", -30, -30)),
    ],
)
def test_date_literals(text, expected):
    literal = literal_of(text)
    assert (literal.kind, literal.value) == (LiteralKind.DATE_RANGE, expected)


# -- ORDER BY, LIMIT, OFFSET ----------------------------------------------------------------


def test_order_by_keys_default_to_ascending_nulls_first():
    query = parse(
        "SELECT Id FROM Order ORDER BY Account.Name, EffectiveDate DESC, Name ASC NULLS LAST, Id NULLS FIRST"
    )
    assert [(k.field.text, k.descending, k.nulls_last) for k in query.order_by] == [
        ("Account.Name", False, False),
        ("EffectiveDate", True, False),
        ("Name", False, True),
        ("Id", False, False),
    ]


def test_limit_and_offset_up_to_the_maximum():
    query = parse("SELECT Id FROM Order LIMIT 0 OFFSET 2000")
    assert (query.limit.value, query.offset.value) == (0, 2000)


# -- syntax errors --------------------------------------------------------------------------


def test_missing_from():
    with pytest.raises(SalesforceError) as caught:
        parse("SELECT Id")
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert (
        caught.value.message == "\nSELECT Id\n         ^\nERROR at Row:1:Column:10\nunexpected token: <EOF>"
    )


def test_missing_from_before_where():
    syntax_error("SELECT Id WHERE Name = 'a'", "WHERE")


def test_empty_select_list():
    syntax_error("SELECT FROM Order", "FROM")


def test_trailing_comma_in_select_list():
    syntax_error("SELECT Id, FROM Order", "FROM")


def test_star_is_not_soql():
    syntax_error("SELECT * FROM Order", "*")


def test_empty_query():
    with pytest.raises(SalesforceError) as caught:
        parse("")
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:1\nunexpected token: <EOF>" in caught.value.message


def test_trailing_garbage():
    syntax_error("SELECT Id FROM Order xyz", "xyz")


def test_trailing_garbage_after_limit():
    syntax_error("SELECT Id FROM Order LIMIT 5 ORDER BY Name", "ORDER")


def test_unknown_character():
    syntax_error("SELECT Id FROM Order WHERE Name = 'a';", ";")


@pytest.mark.parametrize(
    ("soql", "at", "clause"),
    [
        ("SELECT Name FROM Order GROUP BY Name", "GROUP", "GROUP BY"),
        ("SELECT Id FROM Order FOR UPDATE", "FOR", "FOR VIEW/UPDATE/REFERENCE"),
        ("SELECT Id FROM Order WITH SECURITY_ENFORCED", "WITH", "WITH"),
    ],
)
def test_unsupported_clauses_are_named(soql, at, clause):
    syntax_error(soql, at, f"unexpected token: '{at}' ({clause} is not supported by this sandbox)")


def test_and_or_mixed_without_parentheses():
    syntax_error("SELECT Id FROM Order WHERE Name = 'a' AND Status = 'b' OR Type = 'c'", "OR")
    syntax_error("SELECT Id FROM Order WHERE Name = 'a' OR Status = 'b' AND Type = 'c'", "AND")


def test_unclosed_parenthesis():
    with pytest.raises(SalesforceError) as caught:
        parse("SELECT Id FROM Order WHERE (Name = 'a'")
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert caught.value.message.endswith("ERROR at Row:1:Column:39\nunexpected token: <EOF>")


def test_not_like_is_not_soql():
    syntax_error("SELECT Id FROM Order WHERE Name NOT LIKE 'a'", "NOT")


def test_like_needs_a_string():
    syntax_error("SELECT Id FROM Order WHERE Name LIKE 5", "5")


def test_empty_in_list():
    syntax_error("SELECT Id FROM Order WHERE Name IN ()", ")")


def test_missing_value():
    syntax_error("SELECT Id FROM Order WHERE Name = AND", "AND")


def test_function_calls_are_not_understood():
    syntax_error("SELECT Id FROM Order WHERE CALENDAR_YEAR(CreatedDate) = 2026", "(")


def test_alias_on_a_plain_field():
    syntax_error("SELECT Name alias FROM Order", "alias")


def test_bad_escape():
    syntax_error(
        r"SELECT Id FROM Order WHERE Name = 'a\qb'",
        "\\",
        r"Invalid string literal 'a\q'. Illegal character sequence '\q' in string literal.",
    )


def test_short_unicode_escape():
    syntax_error(
        r"SELECT Id FROM Order WHERE Name = '\u12'",
        "\\",
        r"Invalid string literal '\u'. Illegal character sequence '\u' in string literal.",
    )


def test_wildcard_escape_outside_like():
    syntax_error(
        r"SELECT Id FROM Order WHERE Name = 'a\%'",
        "'",
        r"Invalid string literal 'a\%'. Illegal character sequence '\%' in string literal.",
    )


def test_unterminated_string():
    with pytest.raises(SalesforceError) as caught:
        parse("SELECT Id FROM Order WHERE Name = 'abc")
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert caught.value.message.endswith(
        "ERROR at Row:1:Column:39\nmismatched character '<EOF>' expecting '''"
    )


def test_limit_not_a_number():
    syntax_error("SELECT Id FROM Order LIMIT abc", "abc")
    syntax_error("SELECT Id FROM Order LIMIT 1.5", "1.5")
    syntax_error("SELECT Id FROM Order LIMIT -1", "-1")


def test_offset_above_2000():
    syntax_error(
        "SELECT Id FROM Order OFFSET 2001",
        "2001",
        "Maximum SOQL offset allowed is 2000",
        "NUMBER_OUTSIDE_VALID_RANGE",
    )


def test_offset_in_a_subquery():
    syntax_error(
        "SELECT Id, (SELECT Id FROM OrderItems OFFSET 1) FROM Order",
        "OFFSET",
        "OFFSET is not allowed in a subquery",
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-13-01", "Invalid date or dateTime literal: month must be in 1..12"),
        ("2026-02-30", "Invalid date or dateTime literal: day is out of range for month"),
        (
            "2026-01-01T00:00:00",
            "Invalid date or dateTime literal: '2026-01-01T00:00:00' is not a valid date or dateTime",
        ),
        ("2026-01-01T25:00:00Z", "Invalid date or dateTime literal: hour must be in 0..23"),
        (
            "LAST_N_DAYS:x",
            "Invalid date literal 'LAST_N_DAYS:x': the number of days must be a non-negative integer, not 'x'",
        ),
        (
            "LAST_N_DAYS",
            "Invalid date literal 'LAST_N_DAYS': LAST_N_DAYS needs a number of days, as in LAST_N_DAYS:7",
        ),
        ("TODAY:3", "Invalid date literal 'TODAY:3': TODAY does not take a number of days"),
    ],
)
def test_bad_date_literals(value, reason):
    syntax_error(f"SELECT Id FROM Order WHERE EffectiveDate > {value}", value, reason)


def test_unknown_parameterized_literal():
    syntax_error("SELECT Id FROM Order WHERE EffectiveDate > LAST_N_WEEKS:2", "LAST_N_WEEKS:2")


def test_error_position_on_a_later_row():
    soql = "SELECT Id\nFROM Order\nWHERE Name = 'a' AND Status = 'b' OR Type = 'c'"
    error = syntax_error(soql, "OR")
    assert "\nWHERE Name = 'a' AND Status = 'b' OR Type = 'c'\n" in error.message
    assert "ERROR at Row:3:Column:35" in error.message


# -- aggregate rules ------------------------------------------------------------------------


def test_count_must_stand_alone():
    syntax_error(
        "SELECT Id, COUNT() FROM Order", "COUNT", "COUNT() must be the only element in the select list"
    )


def test_aggregate_with_a_plain_field():
    syntax_error("SELECT COUNT(Id), Name FROM Order", "Name", "Field must be grouped or aggregated: Name")


def test_aggregate_with_order_by():
    syntax_error(
        "SELECT COUNT(Id) FROM Order ORDER BY Name",
        "Name",
        "Ordered field must be grouped or aggregated: Name",
    )


def test_aggregate_with_a_subquery():
    syntax_error(
        "SELECT COUNT(Id), (SELECT Id FROM OrderItems) FROM Order",
        "(SELECT",
        "Aggregate queries do not support parent-to-child subqueries",
    )


def test_count_inside_a_subquery():
    syntax_error(
        "SELECT Id, (SELECT COUNT() FROM OrderItems) FROM Order",
        "COUNT",
        "Aggregate functions are not allowed in a subquery",
    )


def test_semi_join_selects_one_plain_field():
    syntax_error(
        "SELECT Id FROM Order WHERE Id IN (SELECT OrderId, Id FROM OrderItem)",
        "Id FROM OrderItem",
        "A semi-join subquery must select exactly one Id or reference field",
    )
    syntax_error(
        "SELECT Id FROM Order WHERE Id IN (SELECT Order.Id FROM OrderItem)",
        "Order.Id",
        "A semi-join subquery must select exactly one Id or reference field",
    )


# -- errors found while resolving names against the schema ----------------------------------

_INVALID_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. "
    "Please reference your WSDL or the describe call for the appropriate names."
)


def test_unknown_object(engine):
    error = expect_error(
        engine.prepare,
        "INVALID_TYPE",
        "SELECT Id FROM Bogus",
        "Bogus",
        "sObject type 'Bogus' is not supported. If you are attempting to use a custom object, be sure to append "
        "the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
    )
    assert error.message.startswith("\nSELECT Id FROM Bogus\n               ^\nERROR at Row:1:Column:16\n")


def test_unknown_field(engine):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Id, Foo FROM Order",
        "Foo",
        f"No such column 'Foo' on entity 'Order'. {_INVALID_FIELD_HINT}",
    )


@pytest.mark.parametrize(
    ("soql", "entity"),
    [
        ("SELECT Id FROM Order WHERE Foo = 'a'", "Order"),
        ("SELECT Id FROM Order ORDER BY Foo", "Order"),
        ("SELECT COUNT(Foo) FROM Order", "Order"),
        ("SELECT Id, (SELECT Foo FROM OrderItems) FROM Order", "OrderItem"),
        ("SELECT Id, (SELECT Id FROM OrderItems WHERE Foo = 1) FROM Order", "OrderItem"),
        ("SELECT Id FROM Order WHERE Id IN (SELECT OrderId FROM OrderItem WHERE Foo = 1)", "OrderItem"),
    ],
)
def test_unknown_field_anywhere(engine, soql, entity):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        soql,
        "Foo",
        f"No such column 'Foo' on entity '{entity}'. {_INVALID_FIELD_HINT}",
    )


def test_unknown_field_behind_a_relationship_names_the_parent(engine):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Account.Parent.Foo FROM Order",
        "Account",
        f"No such column 'Foo' on entity 'Account'. {_INVALID_FIELD_HINT}",
    )


def test_unknown_relationship(engine):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Id, Acount.Name FROM Order",
        "Acount",
        "Didn't understand relationship 'Acount' in field path. If you are attempting to use a custom "
        "relationship, be sure to append the '__r' after the custom relationship name. Please reference your "
        "WSDL or the describe call for the appropriate names.",
    )


def test_a_plain_field_is_not_a_relationship(engine):
    with pytest.raises(SalesforceError) as caught:
        engine.prepare("SELECT AccountId.Name FROM Order")
    assert caught.value.error_code == "INVALID_FIELD"
    assert "Didn't understand relationship 'AccountId'" in caught.value.message


def test_unknown_child_relationship(engine):
    expect_error(
        engine.prepare,
        "INVALID_TYPE",
        "SELECT Id, (SELECT Id FROM Items) FROM Order",
        "Items",
        "Didn't understand relationship 'Items' in FROM part of query call. If you are attempting to use a "
        "custom relationship, be sure to append the '__r' after the custom relationship name. Please reference "
        "your WSDL or the describe call for the appropriate names.",
    )


def test_relationship_paths_stop_at_five_levels(engine):
    engine.prepare("SELECT Account.Parent.Parent.Parent.Parent.Name FROM Order")
    expect_error(
        engine.prepare,
        "MALFORMED_QUERY",
        "SELECT Account.Parent.Parent.Parent.Parent.Parent.Name FROM Order",
        "Account",
        "SOQL statements cannot query relationships that are more than 5 levels away from the root entity object.",
    )


def test_duplicate_field(engine):
    expect_error(
        engine.prepare,
        "MALFORMED_QUERY",
        "SELECT Id, Name, name FROM Order",
        "name",
        "duplicate field selected: Name",
    )
    expect_error(
        engine.prepare,
        "MALFORMED_QUERY",
        "SELECT Account.Name, account.NAME FROM Order",
        "account",
        "duplicate field selected: Account.Name",
    )


def test_semi_join_on_unknown_object(engine):
    with pytest.raises(SalesforceError) as caught:
        engine.prepare("SELECT Id FROM Order WHERE Id IN (SELECT OrderId FROM Bogus)")
    assert caught.value.error_code == "INVALID_TYPE"
    assert "ERROR at Row:1:Column:55\nsObject type 'Bogus' is not supported." in caught.value.message


def test_semi_join_must_select_an_id(engine):
    expect_error(
        engine.prepare,
        "MALFORMED_QUERY",
        "SELECT Id FROM Order WHERE Id IN (SELECT Description FROM OrderItem)",
        "Description",
        "A semi-join subquery must select exactly one Id or reference field",
    )


def test_semi_join_on_a_non_id_field(engine):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Id FROM Order WHERE Name IN (SELECT OrderId FROM OrderItem)",
        "Name",
        "Field 'Name' must be an Id or reference field to be used in a semi-join",
    )


@pytest.mark.parametrize(
    ("condition", "at", "type_name", "quoting"),
    [
        ("Name = 5", "5", "string", "be enclosed in quotes"),
        ("AccountId = null OR AccountId = 1", "1", "string", "be enclosed in quotes"),
        ("EffectiveDate > '2026-01-01'", "'2026-01-01'", "date", "not be enclosed in quotes"),
        ("EffectiveDate > 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "date", "not be enclosed in quotes"),
        ("CreatedDate > 2026-01-01", "2026-01-01", "dateTime", "not be enclosed in quotes"),
        ("IsDeleted = 'false'", "'false'", "boolean", "not be enclosed in quotes"),
        ("TotalAmount > '5'", "'5'", "double", "not be enclosed in quotes"),
        ("Name = TODAY", "TODAY", "string", "be enclosed in quotes"),
        ("Status IN ('Draft', 3)", "3", "string", "be enclosed in quotes"),
    ],
)
def test_literal_of_the_wrong_type(engine, condition, at, type_name, quoting):
    soql = f"SELECT Id FROM Order WHERE {condition}"
    field = condition.split()[0] if " OR " not in condition else "AccountId"
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        soql,
        at,
        f"value of filter criterion for field '{field}' must be of type {type_name} and should {quoting}",
    )


def test_includes_needs_a_multipicklist(engine):
    expect_error(
        engine.prepare,
        "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Order WHERE Status INCLUDES ('Draft')",
        "Status",
        "includes or excludes operator only valid on multipicklist field",
    )


def test_like_needs_a_text_field(engine):
    expect_error(
        engine.prepare,
        "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Order WHERE TotalAmount LIKE '1%'",
        "TotalAmount",
        "invalid operator on currency field: LIKE can only be used on text fields",
    )


def test_null_only_with_equality(engine):
    expect_error(
        engine.prepare,
        "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Order WHERE Name > null",
        "null",
        "null can only be compared with = or !=, not >",
    )


def test_date_literal_in_an_in_list(engine):
    expect_error(
        engine.prepare,
        "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Order WHERE EffectiveDate IN (TODAY)",
        "TODAY",
        "date literal TODAY is not valid in IN",
    )


def test_long_text_cannot_be_filtered_or_sorted(engine):
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Id FROM Order WHERE Description = 'a'",
        "Description",
        "field 'Description' can not be filtered in a query call",
    )
    expect_error(
        engine.prepare,
        "INVALID_FIELD",
        "SELECT Id FROM Order ORDER BY Description",
        "Description",
        "field 'Description' can not be sorted in a query call",
    )


def test_now_must_be_timezone_aware(engine):
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.prepare("SELECT Id FROM Order", now=dt.datetime(2026, 1, 1))
