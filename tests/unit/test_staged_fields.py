"""Staged records decoded with only the fields a stage reads (staging._narrow_records)."""

from __future__ import annotations

import json

import pytest

from salesforce_orders import staging
from salesforce_orders.model import CARD_DATA_MASKED
from salesforce_orders.staging import _narrow_records

FIELDS = ("Id", "OrderNumber", CARD_DATA_MASKED)


def texts(*records: dict) -> list[bytes]:
    return [json.dumps(record).encode() for record in records]


def test_records_keep_only_the_fields_asked_for_and_the_imports_own_key_may_be_absent(monkeypatch: pytest.MonkeyPatch):
    """Most records hold no card-data key: that does not make them look short of a field (it did,
    and the search for other spellings counted every key of the page and lowered its whole text)."""

    def no_search(*args: object) -> None:
        raise AssertionError("searched the page for other spellings")

    monkeypatch.setattr(staging, "Counter", no_search)
    records = _narrow_records(
        texts({"Id": "801A", "OrderNumber": "1", "Description": "x" * 50}, {"Id": "801B", "OrderNumber": "2", CARD_DATA_MASKED: ["PoNumber"], "Description": "y"}),
        FIELDS,
    )

    assert records == [{"Id": "801A", "OrderNumber": "1"}, {"Id": "801B", "OrderNumber": "2", CARD_DATA_MASKED: ["PoNumber"]}]


def test_a_field_spelt_in_another_case_has_the_page_read_whole():
    """A reader matching names as Salesforce does would find ``orderNumber``: the page is decoded
    whole so it can."""
    records = _narrow_records(texts({"Id": "801A", "orderNumber": "1", "Description": "x"}, {"Id": "801B", "OrderNumber": "2"}), FIELDS)

    assert records[0] == {"Id": "801A", "orderNumber": "1", "Description": "x"}
