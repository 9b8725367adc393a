"""SOQL tokenizer: turns query text into tokens that carry their offset in the text.

Keywords are not recognised here: SOQL keywords are contextual (``Order`` is both an
object and the start of ``ORDER BY``), so the parser decides what an identifier means.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from .diagnostics import MALFORMED_QUERY, query_error, unexpected_token


class TokenKind(Enum):
    IDENT = "identifier"
    PARAMETERIZED = "parameterized date literal"  # LAST_N_DAYS:7
    STRING = "string"
    NUMBER = "number"
    TEMPORAL = "date or dateTime"  # 2026-01-01, 2026-01-01T00:00:00Z
    OPERATOR = "operator"
    COMMA = ","
    DOT = "."
    LPAREN = "("
    RPAREN = ")"
    EOF = "end of query"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # exactly as written in the query (strings with their quotes, undecoded)
    offset: int
    value: object = None  # decoded string, or int/float for numbers
    # Offsets (in the decoded string) of ``%``/``_`` written as ``\%``/``\_``: literal in LIKE.
    escaped_wildcards: frozenset[int] = field(default_factory=frozenset)

    def is_keyword(self, *words: str) -> bool:
        return self.kind is TokenKind.IDENT and self.text.upper() in words


_WHITESPACE = re.compile(r"\s+")
_PARAMETERIZED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:[^\s,()]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Loose on purpose: the parser validates the value and reports a precise error.
_TEMPORAL = re.compile(r"\d{4}-\d{2}-\d{2}(?:T[0-9:.+\-Z]*)?")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_OPERATOR = re.compile(r"!=|<>|<=|>=|=|<|>")
_PUNCTUATION = {",": TokenKind.COMMA, ".": TokenKind.DOT, "(": TokenKind.LPAREN, ")": TokenKind.RPAREN}

_SIMPLE_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "r": "\r",
    "R": "\r",
    "t": "\t",
    "T": "\t",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_LIKE_WILDCARDS = "%_"


def tokenize(source: str) -> Iterator[Token]:
    """Yield the tokens of ``source``, ending with one EOF token.

    Lazy, so that a bad character late in the query does not hide an earlier syntax error.
    """
    pos = 0
    length = len(source)
    while True:
        space = _WHITESPACE.match(source, pos)
        if space:
            pos = space.end()
        if pos >= length:
            yield Token(TokenKind.EOF, "", length)
            return
        char = source[pos]
        if char == "'":
            token = _string(source, pos)
        elif char in _PUNCTUATION:
            token = Token(_PUNCTUATION[char], char, pos)
        elif match := _PARAMETERIZED.match(source, pos):
            token = Token(TokenKind.PARAMETERIZED, match.group(), pos)
        elif match := _IDENT.match(source, pos):
            token = Token(TokenKind.IDENT, match.group(), pos)
        elif match := _TEMPORAL.match(source, pos):
            token = Token(TokenKind.TEMPORAL, match.group(), pos)
        elif match := _NUMBER.match(source, pos):
            text = match.group()
            token = Token(TokenKind.NUMBER, text, pos, value=float(text) if "." in text else int(text))
        elif match := _OPERATOR.match(source, pos):
            token = Token(TokenKind.OPERATOR, match.group(), pos)
        else:
            raise unexpected_token(source, pos, char)
        pos = token.offset + len(token.text)
        yield token


def _string(source: str, start: int) -> Token:
    """Decode the quoted string starting at ``start`` (the opening quote)."""
    decoded: list[str] = []
    escaped_wildcards: set[int] = set()
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == "'":
            return Token(
                TokenKind.STRING,
                source[start : pos + 1],
                start,
                value="".join(decoded),
                escaped_wildcards=frozenset(escaped_wildcards),
            )
        if char != "\\":
            decoded.append(char)
            pos += 1
            continue
        escape = source[pos + 1 : pos + 2]
        if escape in _SIMPLE_ESCAPES:
            decoded.append(_SIMPLE_ESCAPES[escape])
            pos += 2
        elif escape and escape in _LIKE_WILDCARDS:
            escaped_wildcards.add(len(decoded))
            decoded.append(escape)
            pos += 2
        elif escape == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", source[pos + 2 : pos + 6]):
            decoded.append(chr(int(source[pos + 2 : pos + 6], 16)))
            pos += 6
        else:
            sequence = source[pos : pos + 2]
            raise query_error(
                MALFORMED_QUERY,
                source,
                pos,
                f"Invalid string literal '{source[start + 1 : pos + 2]}'. "
                f"Illegal character sequence '{sequence}' in string literal.",
            )
    raise query_error(MALFORMED_QUERY, source, len(source), "mismatched character '<EOF>' expecting '''")
