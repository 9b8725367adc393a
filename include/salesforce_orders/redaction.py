"""Card numbers out of free text that the pipeline keeps or logs.

The import never selects card fields, so card data cannot reach the warehouse through a query.
Free text that Salesforce writes itself can still carry a card number: the message of a
validation rule that rejects a write-back ("card 4111 1111 1111 1111 expired") is stored in the
outbox and logged. Such text goes through :func:`redact_card_numbers` first.
"""

from __future__ import annotations

import re

CARD_NUMBER_REMOVED = "[card number removed]"

# 13 to 19 digits, optionally grouped by single spaces or dashes, standing alone: not part of a
# longer number nor of a word such as a Salesforce Id (``801000000000123AAA``).
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z-])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` pass the Luhn check every payment card number passes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def redact_card_numbers(text: str | None) -> str | None:
    """``text`` with every card-number-like sequence (13-19 digits passing Luhn) replaced."""
    if not text:
        return text

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return CARD_NUMBER_REMOVED if luhn_valid(digits) else match.group(0)

    return _CANDIDATE.sub(replace, text)


__all__ = ["CARD_NUMBER_REMOVED", "luhn_valid", "redact_card_numbers"]
