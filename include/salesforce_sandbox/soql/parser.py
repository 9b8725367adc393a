"""Recursive-descent parser for the SOQL subset the sandbox serves.

Grammar (keywords case-insensitive)::

    query      := SELECT item ("," item)* FROM name [WHERE condition]
                  [ORDER BY key ("," key)*] [LIMIT int] [OFFSET int]
    item       := path | COUNT "(" [path] ")" [alias] | "(" query ")"
    path       := name ("." name)*
    condition  := unary (AND unary)* | unary (OR unary)*     -- mixing needs parentheses
    unary      := NOT unary | "(" condition ")" | simple
    simple     := path op literal | path LIKE string | path [NOT] IN "(" (literals | query) ")"
                | path (INCLUDES | EXCLUDES) "(" literals ")"
    key        := path [ASC | DESC] [NULLS (FIRST | LAST)]

Everything else is a MALFORMED_QUERY error pointing at the first token not understood:
no clause is ever skipped. Names are resolved later, against the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from ..errors import SalesforceError
from .ast import (
    And,
    Clause,
    Comparison,
    Condition,
    Count,
    FieldPath,
    Literal,
    LiteralKind,
    Membership,
    Not,
    Or,
    OrderKey,
    Query,
    SelectItem,
    SemiJoin,
    SubQuery,
)
from .dates import date_range, is_date_range_name, parse_temporal
from .diagnostics import MALFORMED_QUERY, NUMBER_OUTSIDE_VALID_RANGE, query_error, unexpected_token
from .lexer import Token, TokenKind, tokenize

MAX_OFFSET = 2000

# SOQL's reserved words: never a field or object name. ORDER is not one (Order is an object).
RESERVED = frozenset(
    "AND ASC DESC EXCLUDES FIRST FROM GROUP HAVING IN INCLUDES LAST LIKE LIMIT NOT NULL NULLS OR "
    "SELECT WHERE WITH".split()
)
# Real SOQL clauses the sandbox does not serve: named in the error so it is not read as a typo.
_UNSUPPORTED_CLAUSES = {
    "GROUP": "GROUP BY",
    "HAVING": "HAVING",
    "WITH": "WITH",
    "FOR": "FOR VIEW/UPDATE/REFERENCE",
    "USING": "USING SCOPE",
    "TYPEOF": "TYPEOF",
}
_CONSTANTS = {
    "NULL": (LiteralKind.NULL, None),
    "TRUE": (LiteralKind.BOOLEAN, True),
    "FALSE": (LiteralKind.BOOLEAN, False),
}
_COMPARISON_OPERATORS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class _Nesting(Enum):
    ROOT = "root"
    CHILD = "child"  # (SELECT ... FROM OrderItems) in a select list
    SEMI_JOIN = "semi-join"  # Id IN (SELECT OrderId FROM OrderItem)


def parse(text: str) -> Query:
    """Parse a SOQL query; raises :class:`SalesforceError` (MALFORMED_QUERY and friends)."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self._tokens: Iterator[Token] = tokenize(source)
        self._lookahead: list[Token] = []

    # -- token stream -------------------------------------------------------------------

    def _peek(self, ahead: int = 0) -> Token:
        while len(self._lookahead) <= ahead:
            self._lookahead.append(next(self._tokens))
        return self._lookahead[ahead]

    def _advance(self) -> Token:
        token = self._peek()
        self._lookahead.pop(0)
        return token

    def _unexpected(self, token: Token) -> SalesforceError:
        if token.kind is TokenKind.EOF:
            return unexpected_token(self.source, token.offset, None)
        clause = _UNSUPPORTED_CLAUSES.get(token.text.upper()) if token.kind is TokenKind.IDENT else None
        if clause:
            return query_error(
                MALFORMED_QUERY,
                self.source,
                token.offset,
                f"unexpected token: '{token.text}' ({clause} is not supported by this sandbox)",
            )
        return unexpected_token(self.source, token.offset, token.text)

    def _expect(self, kind: TokenKind) -> Token:
        token = self._peek()
        if token.kind is not kind:
            raise self._unexpected(token)
        return self._advance()

    def _expect_keyword(self, word: str) -> Token:
        token = self._peek()
        if not token.is_keyword(word):
            raise self._unexpected(token)
        return self._advance()

    def _accept_keyword(self, *words: str) -> Token | None:
        return self._advance() if self._peek().is_keyword(*words) else None

    def _error(self, code: str, offset: int, reason: str) -> SalesforceError:
        return query_error(code, self.source, offset, reason)

    # -- query --------------------------------------------------------------------------

    def parse(self) -> Query:
        query = self._query(_Nesting.ROOT)
        self._expect(TokenKind.EOF)
        return query

    def _query(self, nesting: _Nesting) -> Query:
        self._expect_keyword("SELECT")
        select = self._select_list(nesting)
        self._expect_keyword("FROM")
        name = self._name()
        where = self._condition() if self._accept_keyword("WHERE") else None
        order_by: tuple[OrderKey, ...] = ()
        order_by_offset = None
        if self._peek().is_keyword("ORDER") and self._peek(1).is_keyword("BY"):
            order_by_offset = self._advance().offset
            self._advance()
            order_by = self._order_keys()
        limit = self._count_clause() if self._accept_keyword("LIMIT") else None
        offset = None
        offset_token = self._accept_keyword("OFFSET")
        if offset_token:
            if nesting is not _Nesting.ROOT:
                raise self._error(MALFORMED_QUERY, offset_token.offset, "OFFSET is not allowed in a subquery")
            offset = self._count_clause()
            if offset.value > MAX_OFFSET:
                raise self._error(
                    NUMBER_OUTSIDE_VALID_RANGE, offset.offset, f"Maximum SOQL offset allowed is {MAX_OFFSET}"
                )
        query = Query(
            select=select,
            object_name=name.text,
            object_offset=name.offset,
            where=where,
            order_by=order_by,
            order_by_offset=order_by_offset,
            limit=limit,
            offset=offset,
            source=self.source,
        )
        self._check_aggregates(query)
        return query

    def _name(self) -> Token:
        token = self._peek()
        if token.kind is not TokenKind.IDENT or token.text.upper() in RESERVED:
            raise self._unexpected(token)
        return self._advance()

    def _count_clause(self) -> Clause:
        token = self._peek()
        if token.kind is not TokenKind.NUMBER or not isinstance(token.value, int) or token.value < 0:
            raise self._unexpected(token)
        self._advance()
        return Clause(token.value, token.offset)

    # -- select list --------------------------------------------------------------------

    def _select_list(self, nesting: _Nesting) -> tuple[SelectItem, ...]:
        items = [self._select_item(nesting)]
        while self._peek().kind is TokenKind.COMMA:
            self._advance()
            items.append(self._select_item(nesting))
        if nesting is _Nesting.SEMI_JOIN and (
            len(items) != 1 or not isinstance(items[0], FieldPath) or len(items[0].parts) != 1
        ):
            offset = items[0].offset if len(items) == 1 else items[1].offset
            raise self._error(
                MALFORMED_QUERY, offset, "A semi-join subquery must select exactly one Id or reference field"
            )
        return tuple(items)

    def _select_item(self, nesting: _Nesting) -> SelectItem:
        token = self._peek()
        if token.kind is TokenKind.LPAREN:
            if nesting is _Nesting.SEMI_JOIN:
                raise self._unexpected(token)
            self._advance()
            sub = self._query(_Nesting.CHILD)
            self._expect(TokenKind.RPAREN)
            return SubQuery(sub, token.offset)
        if token.is_keyword("COUNT") and self._peek(1).kind is TokenKind.LPAREN:
            if nesting is not _Nesting.ROOT:
                raise self._error(
                    MALFORMED_QUERY, token.offset, "Aggregate functions are not allowed in a subquery"
                )
            return self._count()
        return self._field_path()

    def _count(self) -> Count:
        start = self._advance()
        self._expect(TokenKind.LPAREN)
        field = None if self._peek().kind is TokenKind.RPAREN else self._field_path()
        self._expect(TokenKind.RPAREN)
        alias = None
        after = self._peek()
        if field is not None and after.kind is TokenKind.IDENT and after.text.upper() not in RESERVED:
            alias = self._advance().text
        return Count(field, alias, start.offset)

    def _field_path(self) -> FieldPath:
        first = self._name()
        parts = [first.text]
        while self._peek().kind is TokenKind.DOT:
            self._advance()
            parts.append(self._expect(TokenKind.IDENT).text)
        return FieldPath(tuple(parts), first.offset)

    def _check_aggregates(self, query: Query) -> None:
        counts = [item for item in query.select if isinstance(item, Count)]
        if not counts:
            return
        bare = next((c for c in counts if c.field is None), None)
        if bare is not None and len(query.select) > 1:
            raise self._error(
                MALFORMED_QUERY, bare.offset, "COUNT() must be the only element in the select list"
            )
        for item in query.select:
            if isinstance(item, FieldPath):
                raise self._error(
                    MALFORMED_QUERY, item.offset, f"Field must be grouped or aggregated: {item.text}"
                )
            if isinstance(item, SubQuery):
                raise self._error(
                    MALFORMED_QUERY,
                    item.offset,
                    "Aggregate queries do not support parent-to-child subqueries",
                )
        if bare is None and query.order_by:
            key = query.order_by[0].field
            raise self._error(
                MALFORMED_QUERY, key.offset, f"Ordered field must be grouped or aggregated: {key.text}"
            )

    # -- WHERE --------------------------------------------------------------------------

    def _condition(self) -> Condition:
        first = self._unary()
        token = self._peek()
        if not token.is_keyword("AND", "OR"):
            return first
        connective = token.text.upper()
        other = "OR" if connective == "AND" else "AND"
        operands = [first]
        while self._accept_keyword(connective):
            operands.append(self._unary())
        if self._peek().is_keyword(other):
            # Salesforce refuses ``a AND b OR c``: the grouping must be written out.
            raise self._unexpected(self._peek())
        return And(tuple(operands)) if connective == "AND" else Or(tuple(operands))

    def _unary(self) -> Condition:
        token = self._peek()
        if token.is_keyword("NOT"):
            self._advance()
            return Not(self._unary(), token.offset)
        if token.kind is TokenKind.LPAREN:
            self._advance()
            inner = self._condition()
            self._expect(TokenKind.RPAREN)
            return inner
        return self._simple_condition()

    def _simple_condition(self) -> Condition:
        field = self._field_path()
        token = self._peek()
        if token.kind is TokenKind.OPERATOR:
            self._advance()
            return Comparison(field, _COMPARISON_OPERATORS[token.text], self._plain_literal(), field.offset)
        if token.is_keyword("LIKE"):
            self._advance()
            if self._peek().kind is not TokenKind.STRING:
                raise self._unexpected(self._peek())
            return Comparison(field, "LIKE", self._literal(), field.offset)
        if token.is_keyword("IN"):
            self._advance()
            return self._in_operand(field, negated=False)
        if token.is_keyword("NOT") and self._peek(1).is_keyword("IN"):
            self._advance()
            self._advance()
            return self._in_operand(field, negated=True)
        if token.is_keyword("INCLUDES", "EXCLUDES"):
            self._advance()
            return Membership(field, token.text.upper(), self._literal_list(), field.offset)
        raise self._unexpected(token)

    def _in_operand(self, field: FieldPath, *, negated: bool) -> Condition:
        if self._peek().kind is TokenKind.LPAREN and self._peek(1).is_keyword("SELECT"):
            self._advance()
            sub = self._query(_Nesting.SEMI_JOIN)
            self._expect(TokenKind.RPAREN)
            return SemiJoin(field, negated, sub, field.offset)
        return Membership(field, "NOT IN" if negated else "IN", self._literal_list(), field.offset)

    def _literal_list(self) -> tuple[Literal, ...]:
        self._expect(TokenKind.LPAREN)
        values = [self._plain_literal()]
        while self._peek().kind is TokenKind.COMMA:
            self._advance()
            values.append(self._plain_literal())
        self._expect(TokenKind.RPAREN)
        return tuple(values)

    def _literal(self) -> Literal:
        token = self._peek()
        kind = token.kind
        if kind is TokenKind.STRING:
            self._advance()
            return Literal(LiteralKind.STRING, token.value, token.offset, token.escaped_wildcards)
        if kind is TokenKind.NUMBER:
            self._advance()
            return Literal(LiteralKind.NUMBER, token.value, token.offset)
        if kind is TokenKind.TEMPORAL:
            self._advance()
            try:
                value = parse_temporal(token.text)
            except ValueError as exc:
                raise self._error(
                    MALFORMED_QUERY, token.offset, f"Invalid date or dateTime literal: {exc}"
                ) from None
            is_datetime = "T" in token.text
            return Literal(LiteralKind.DATETIME if is_datetime else LiteralKind.DATE, value, token.offset)
        if kind is TokenKind.PARAMETERIZED:
            name, _, parameter = token.text.partition(":")
            return self._date_range(token, name, parameter)
        if kind is TokenKind.IDENT:
            upper = token.text.upper()
            if upper in _CONSTANTS:
                self._advance()
                literal_kind, value = _CONSTANTS[upper]
                return Literal(literal_kind, value, token.offset)
            if is_date_range_name(upper):
                return self._date_range(token, token.text, None)
        raise self._unexpected(token)

    def _plain_literal(self) -> Literal:
        """A literal outside LIKE, where ``\\%`` and ``\\_`` are not valid escapes."""
        token = self._peek()
        literal = self._literal()
        if literal.escaped_wildcards:
            wildcard = literal.value[min(literal.escaped_wildcards)]
            raise self._error(
                MALFORMED_QUERY,
                token.offset,
                f"Invalid string literal {token.text}. Illegal character sequence '\\{wildcard}' in string literal.",
            )
        return literal

    def _date_range(self, token: Token, name: str, parameter: str | None) -> Literal:
        if not is_date_range_name(name):
            raise self._unexpected(token)
        self._advance()
        try:
            value = date_range(name, parameter)
        except ValueError as exc:
            raise self._error(
                MALFORMED_QUERY, token.offset, f"Invalid date literal '{token.text}': {exc}"
            ) from None
        return Literal(LiteralKind.DATE_RANGE, value, token.offset)

    # -- ORDER BY -----------------------------------------------------------------------

    def _order_keys(self) -> tuple[OrderKey, ...]:
        keys = [self._order_key()]
        while self._peek().kind is TokenKind.COMMA:
            self._advance()
            keys.append(self._order_key())
        return tuple(keys)

    def _order_key(self) -> OrderKey:
        field = self._field_path()
        direction = self._accept_keyword("ASC", "DESC")
        nulls_last = False
        if self._accept_keyword("NULLS"):
            nulls_last = self._peek().is_keyword("LAST")
            if not self._accept_keyword("FIRST", "LAST"):
                raise self._unexpected(self._peek())
        descending = direction is not None and direction.text.upper() == "DESC"
        return OrderKey(field, descending, nulls_last)
