"""Salesforce API names (what the configuration may name and SOQL may select) and record Ids."""

from __future__ import annotations

import re

# An API name segment as Salesforce allows it; dotted paths join segments.
API_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
# SOQL follows at most five parent relationships: four dots, plus the field itself.
MAX_PATH_SEGMENTS = 6

# A record Id: 15 case-sensitive characters (as the UI and reports show it), or those and the
# 3-character suffix that makes it case-safe (as the API returns it).
SALESFORCE_ID_PATTERN = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_ID_SUFFIX_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def is_api_name(name: object, *, allow_path: bool = False) -> bool:
    """Whether ``name`` is a Salesforce API name (or, with ``allow_path``, a dotted path of them)."""
    if not isinstance(name, str):
        return False
    segments = name.split(".") if allow_path else [name]
    if len(segments) > MAX_PATH_SEGMENTS:
        return False
    return all(API_NAME_PATTERN.fullmatch(segment) for segment in segments)


def case_safe_id(record_id: str) -> str:
    """The 18-character form of a Salesforce record Id, as the API returns it.

    Salesforce's documented checksum: for each of the 15 characters' three chunks of 5, a number
    with bit *i* set when the chunk's character *i* is an upper-case letter, taken as an index into
    ``A..Z0..5``. A 15-character Id gets those 3 characters; an 18-character one keeps its first
    15 (case-sensitive) with its suffix in capitals, the suffix compared case-insensitively.
    Raises ValueError for a text that is no Salesforce Id, an 18-character one included whose
    suffix does not fit its first 15 characters (a typo, or a letter whose case was changed).
    """
    if not (isinstance(record_id, str) and SALESFORCE_ID_PATTERN.fullmatch(record_id)):
        raise ValueError(f"{str(record_id)[:40]!r} is not a Salesforce id")
    body = record_id[:15]
    suffix = id_suffix(body)
    if len(record_id) == 18 and record_id[15:].upper() != suffix:
        raise ValueError(
            f"{record_id!r} is not a Salesforce id: its last 3 characters do not fit the first 15 "
            f"(their case included: {body!r} ends in {suffix!r})"
        )
    return body + suffix


def id_suffix(body: str) -> str:
    """The 3 characters that make a 15-character Id case-safe (Salesforce's checksum)."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(body[start : start + 5]) if "A" <= char <= "Z")
        suffix += _ID_SUFFIX_CHARACTERS[bits]
    return suffix
