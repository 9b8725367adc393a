"""Salesforce API names: what the configuration may name and SOQL may select."""

from __future__ import annotations

import re

# An API name segment as Salesforce allows it; dotted paths join segments.
API_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
# SOQL follows at most five parent relationships: four dots, plus the field itself.
MAX_PATH_SEGMENTS = 6


def is_api_name(name: object, *, allow_path: bool = False) -> bool:
    """Whether ``name`` is a Salesforce API name (or, with ``allow_path``, a dotted path of them)."""
    if not isinstance(name, str):
        return False
    segments = name.split(".") if allow_path else [name]
    if len(segments) > MAX_PATH_SEGMENTS:
        return False
    return all(API_NAME_PATTERN.fullmatch(segment) for segment in segments)
