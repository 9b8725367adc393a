"""Salesforce record Ids: the 18-character (case-safe) form of a 15-character Id."""

from __future__ import annotations

import pytest

from salesforce_orders.api_names import case_safe_id


@pytest.mark.parametrize(
    ("id15", "id18"),
    [
        ("001000000000001", "001000000000001AAA"),  # no capitals: every chunk 0 -> "A"
        ("801000000000ABC", "801000000000ABCAA2"),  # last chunk "00ABC": bits 2, 3, 4 -> 28 -> "2"
        ("801000000000aBc", "801000000000aBcAAI"),  # the same Id but for case: another record
        ("0015000000ABCde", "0015000000ABCdeAAH"),  # "ABCde": bits 0, 1, 2 -> 7 -> "H"
        ("ABCDEABCDEABCDE", "ABCDEABCDEABCDE555"),  # all capitals: 31 -> "5", the alphabet's last
        # Pairs Salesforce itself shows (help article 000387915, developer forums, Stack Exchange).
        ("00300000003T2PG", "00300000003T2PGAA0"),
        ("00U20000001Rx6d", "00U20000001Rx6dEAC"),
        ("0060H00000mbAZl", "0060H00000mbAZlQAM"),
    ],
)
def test_a_15_character_id_gets_salesforce_s_checksum_suffix(id15, id18):
    assert case_safe_id(id15) == id18
    assert case_safe_id(id18) == id18  # the 18-character form as it is
    assert case_safe_id(id18[:15] + id18[15:].lower()) == id18  # its suffix is compared case-insensitively


@pytest.mark.parametrize(
    "bad",
    [
        "0015000000ABCd",  # 14 characters
        "0015000000ABCdeAA",  # 17
        "0015000000ABCdeAAHX",  # 19
        "0015000000ABCd-",  # not base 62
        "0015000000ABCdé",
        "0015000000ABCdeAAA",  # a suffix that does not fit the first 15
        "0015000000abcdeAAH",  # the first 15's case changed: another Id's characters, this one's suffix
        "x' OR Name != '",
    ],
)
def test_what_is_no_salesforce_id_is_refused(bad):
    with pytest.raises(ValueError, match="is not a Salesforce id"):
        case_safe_id(bad)
