"""The card-number scanner: what it masks, what it keeps, and that its fast path never misses one."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest

from salesforce_orders import redaction
from salesforce_orders.redaction import (
    SECURITY_CODE_MASK,
    card_mask,
    luhn_valid,
    mask_card_numbers,
    mask_records,
    may_hold_card_data,
    may_hold_card_numbers,
)
from salesforce_orders.staging import json_bytes

# Test card numbers of the card schemes, as printed on them.
CARDS = {
    "4111111111111111": "4111 1111 1111 1111",  # Visa
    "5555555555554444": "5555-5555-5555-4444",  # Mastercard
    "378282246310005": "3782 822463 10005",  # Amex, 4-6-5
    "30569309025904": "3056 930902 5904",  # Diners, 4-6-4
    "6011111111111117": "6011 1111 1111 1117",  # Discover
    "4222222222222": "4222222222222",  # 13-digit Visa
    "6304000000000000018": "6304 0000 0000 0000 018",  # 19-digit Maestro, 4-4-4-4-3
}


# How people type a printed number's gaps: spaces (a number copied from a web page or a PDF keeps
# its no-break or narrow no-break spaces), tabs (pasted from a spreadsheet's cells), line breaks (a
# number wrapped in a narrow text box, or typed a group a line, on any system's line ends), dashes,
# dots, and up to three of them; a Japanese or Chinese keyboard's ideographic space.
SEPARATORS = (
    " ", "-", ".", "\u00a0", "\u202f", "\u2009", "\u2007", "\t", "  ", " - ", "--", "\t\t", " \t", "\u3000",
    # the en, em, three-, four- and six-per-em, punctuation and hair spaces of a typeset text (a PDF, a word processor)
    "\u2002", "\u2003", "\u2004", "\u2005", "\u2006", "\u2008", "\u200a",
    "\n", "\r\n", "\r", " \n", "-\n", "\r\n\r\n", " \r\n ", "\n\n",
    # the hyphens, dashes and minus signs word processors and other keyboards type
    "\u2010", "\u2011", "\u2012", "\u2013", " \u2013 ", "\u2014", "\u2212", "\ufe63", "\uff0d",
)
# What nobody sees, pasted from web pages or typed by accident: gone from the text as it is read
# (and a NUL is dropped before anything is stored), so it hides no card number. The left-to-right,
# right-to-left and Arabic letter marks too: a number copied from a right-to-left page or form
# (beside Arabic-Indic digits, say) carries them between its groups.
INVISIBLE = (
    "\x00", "\x0b", "\x1f", "\x7f", "\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200e", "\u200f", "\u061c",
)

# The digits other keyboards type: full-width (a Japanese or Chinese input method), Arabic-Indic
# and Extended Arabic-Indic (Persian, Urdu).
WIDE_DIGITS = {
    "full-width": str.maketrans("0123456789", "０１２３４５６７８９"),
    "arabic-indic": str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"),
    "extended-arabic-indic": str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"),
}


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


def with_check_digit(body: str) -> str:
    """``body`` followed by the digit that makes its digits Luhn-valid."""
    return next(body + digit for digit in "0123456789" if luhn_valid(digits_of(body + digit)))


def without_check_digit(body: str) -> str:
    """``body`` followed by a digit that makes its digits fail the Luhn check."""
    return next(body + digit for digit in "0123456789" if not luhn_valid(digits_of(body + digit)))


def test_luhn_check():
    assert all(luhn_valid(number) for number in CARDS)
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(("plain", "printed"), CARDS.items(), ids=list(CARDS))
def test_card_numbers_are_masked_plain_and_as_printed_keeping_the_last_four(plain, printed):
    expected = f"[card ending {plain[-4:]}]"
    for text in (plain, *(printed.replace(" ", separator) for separator in SEPARATORS)):
        assert mask_card_numbers(f"Paid with {text}, thanks") == f"Paid with {expected}, thanks"
        assert mask_card_numbers(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the CVV after the number is no card number, and it is masked as the security code it is
        ("Card 4111 1111 1111 1111 737 exp 12/27", "Card [card ending 1111] [security code] exp 12/27"),
        ("ref 12 4111111111111111", "ref 12 [card ending 1111]"),
        ("two: 4111111111111111, 5555555555554444.", "two: [card ending 1111], [card ending 4444]."),
        ("4111111111111111 5555555555554444", "[card ending 1111] [card ending 4444]"),
        ("PO-4111111111111111", "PO-[card ending 1111]"),
        ("(4111-1111-1111-1111)", "([card ending 1111])"),
        ("line one\n4111111111111111\nline three", "line one\n[card ending 1111]\nline three"),
        ("Karte 4111.1111.1111.1111.", "Karte [card ending 1111]."),
        ("pasted: 4111\u00a01111\u00a01111\u00a01111\u00a0– thanks", "pasted: [card ending 1111]\u00a0– thanks"),
        ("mixed 4111 1111-1111.1111", "mixed [card ending 1111]"),
        ("spaced 4111 - 1111 - 1111 - 1111 - 737", "spaced [card ending 1111] - [security code]"),
    ],
)
def test_card_numbers_inside_other_text(text, expected):
    assert mask_card_numbers(text) == expected


@pytest.mark.parametrize("digits", WIDE_DIGITS, ids=list(WIDE_DIGITS))
@pytest.mark.parametrize(("plain", "printed"), CARDS.items(), ids=list(CARDS))
def test_card_numbers_typed_in_full_width_or_arabic_indic_digits_are_masked_and_found_in_records(plain, printed, digits):
    """A Japanese or Chinese input method types full-width digits (and ideographic spaces), an
    Arabic or Persian keyboard its own: the same card number, masked alike, its last four shown
    as ASCII digits. The records' fast path finds them too."""
    expected = f"[card ending {plain[-4:]}]"
    for text in (plain, printed, printed.replace(" ", "\u3000"), printed.replace(" ", "-")):
        typed = text.translate(WIDE_DIGITS[digits])
        assert mask_card_numbers(f"支払い {typed} です") == f"支払い {expected} です"
        record = {"Id": "801000000000001AAA", "Description": f"card: {typed}"}
        assert mask_records([record]) == {0: ["Description"]}
        assert record["Description"] == f"card: {expected}"
    one_off = without_check_digit(plain[:-1]).translate(WIDE_DIGITS[digits])
    assert mask_card_numbers(one_off) == one_off  # the Luhn check as for ASCII digits


# Long numbers that are not card numbers, each with a Luhn-valid twin where a grouping or a
# neighbour still tells it apart.
NOT_CARDS = [
    "4111111111111112",  # one digit off a card number: fails the Luhn check
    "4111 1111 1111 1112",
    without_check_digit("1234567890123"),  # 13 digits failing Luhn
    without_check_digit("+49 30 1234 5678 901"),  # a phone number
    "+1 (555) 123-4567 ext 8901234",  # phone: the digits are never one run of 13
    "0049 30 12345678 99",  # grouped as no card is: kept even if it passed Luhn
    with_check_digit("0049 30 12345678 9"),
    with_check_digit("0049.30.12345678.9"),  # the same with dots
    with_check_digit("0049\u00a030\u00a012345678\u00a09"),  # and no-break spaces
    "192.168.100.200",
    with_check_digit("0049 - 30 - 12345678 - 9"),  # grouped as no card is, with wider gaps
    "4111    1111    1111    1111",  # four spaces between groups: columns of a table, not one number
    "801000000000123AAA",  # Salesforce Ids: digits glued to letters
    "00100000000001YAAQ",
    "1Z999AA10123456784",  # UPS tracking number
    without_check_digit("9400 1118 9922 3197 4284 9"),  # USPS tracking number, 22 digits
    with_check_digit("940011189922319742849"),  # 22 digits in one block: too long for a card
    with_check_digit("9400 1118 9922 3197 4284 9"),  # grouped 4-4-4-4-4-2 as no card is
    without_check_digit("7489 1234 5678 901"),  # FedEx, 16 digits in fours, failing Luhn
    "2026-01-02T03:04:05.000+0000",
    "1234567.89",
    "x4111111111111111",  # glued to a word: not a number standing alone
    "4111111111111111x",
]


@pytest.mark.parametrize("text", NOT_CARDS)
def test_other_long_numbers_are_kept(text):
    assert mask_card_numbers(text) is text
    assert mask_card_numbers(f"see {text} please") == f"see {text} please"


def test_luhn_valid_twins_of_numbers_are_masked_where_shaped_like_cards():
    phone_like = with_check_digit("493012345678901")  # 16 digits in one block, passing Luhn
    assert mask_card_numbers(f"call {phone_like}") == f"call {card_mask(phone_like)}"
    fedex_like = with_check_digit("7489 1234 5678 901")
    assert mask_card_numbers(fedex_like) == card_mask(digits_of(fedex_like))


def test_records_are_masked_in_place_and_the_fields_named():
    records = [
        {"Id": "801000000000001AAA", "Description": "no card here", "TotalAmount": 4111111111111112.0, "Quantity": 2},
        {"Id": "801000000000002AAA", "Description": "card 4111 1111 1111 1111", "PoNumber": "PO 5555555555554444"},
        {"Id": "801000000000003AAA", "Account.Name": "Acme", "Account.Phone": "+1 555 123 4567"},
    ]
    untouched = dict(records[0])
    assert mask_records(records) == {1: ["Description", "PoNumber"]}
    assert records[1] == {"Id": "801000000000002AAA", "Description": "card [card ending 1111]", "PoNumber": "PO [card ending 4444]"}
    assert records[0] == untouched
    assert mask_records([]) == {}


@pytest.mark.parametrize(
    "typed",
    [
        4111111111111111, 4111111111111111.0, Decimal("4111111111111111"), Decimal("4111111111111111.00"),
        Decimal("4.111111111111111E+15"), Decimal("4.11111111111116E+15"),  # the exponent form, one ending in a zero
        -4111111111111111, Decimal("-4111111111111111.00"),  # typed with a minus: the card's digits all the same
    ],
    ids=repr,
)
def test_a_card_number_typed_into_a_number_field_is_masked(typed):
    """A Number or Currency field comes as a number (the API's JSON, read as a Decimal or a float),
    not as text: a card number typed into one is masked as text would be, the fast path finding it
    in the records' JSON as the staging writes it too."""
    record = {"Id": "802000000000001AAA", "Quantity": typed, "UnitPrice": Decimal("120.00"), "IsActive": True}
    digits = str(abs(int(typed)))
    assert luhn_valid(digits)
    assert may_hold_card_data(json_bytes(record))
    assert mask_records([dict(record)], [json_bytes(record)]) == {0: ["Quantity"]}
    assert mask_records([record]) == {0: ["Quantity"]}
    assert record == {"Id": "802000000000001AAA", "Quantity": card_mask(digits), "UnitPrice": Decimal("120.00"), "IsActive": True}


@pytest.mark.parametrize(
    "kept",
    [
        4111111111111112, Decimal("4111111111111112"), 1234567890123.0, Decimal("4111111111111111.50"),
        4111111111111111.5, 41111111111111110000.0, Decimal("Infinity"), Decimal("NaN"), 240.0, 0,
    ],
    ids=repr,
)
def test_numbers_that_are_no_card_number_are_kept(kept):
    """Failing the Luhn check, a fraction, beyond what a double holds exactly, not finite, an
    ordinary amount."""
    record = {"TotalAmount": kept}
    assert mask_records([record]) == {}
    assert record["TotalAmount"] is kept


# How people label a card's security code (CVV2, CVC2, CID), and what they write between the label and the code.
CODE_LABELS = (
    "CVV", "cvv2", "CVC", "cvc2", "CVN", "Security code", "security code", "card code", "Card Verification Value",
    "verification code", "Verification number", "CVV no.", "CVV number", "cvv is",
)
CODE_GAPS = (" ", ": ", "=", "#", " - ", ":", " (", "\u00a0")


@pytest.mark.parametrize("label", CODE_LABELS)
def test_a_labelled_security_code_is_masked_wherever_it_is_typed(label):
    """PCI DSS allows a card's security code to be stored nowhere, with or without its card number."""
    for gap in CODE_GAPS:
        for code in ("737", "0421", "٧٣٧", "７３７"):
            assert mask_card_numbers(f"card payment by phone, {label}{gap}{code}, thanks") == (
                f"card payment by phone, {label}{gap}{SECURITY_CODE_MASK}, thanks"
            )
            record = {"Id": "801000000000002AAA", "Description": f"Visa {label}{gap}{code}"}
            assert mask_records([record]) == {0: ["Description"]} and code not in record["Description"]


@pytest.mark.parametrize("label", ["CVV", "cvc2", "CVN", "card code", "Card Verification Value"])
def test_a_cards_own_label_needs_no_card_named_beside_it(label):
    assert mask_card_numbers(f"by phone, {label}: 737") == f"by phone, {label}: {SECURITY_CODE_MASK}"


@pytest.mark.parametrize(
    ("text", "in_a_card_payment"),
    [
        ("Alarm security code 4512, gate code 1234", "Alarm security code [security code], gate code 1234"),
        ("Verification code: 1234 sent by SMS", "Verification code: [security code] sent by SMS"),
        ("security code 0000 for the lobby door", "security code [security code] for the lobby door"),
        ("Alarm security code 4 5 1 2, gate code 1234", "Alarm security code [security code], gate code 1234"),
    ],
)
def test_a_security_or_verification_code_of_no_card_is_kept(text, in_a_card_payment):
    """An installer's note holds an alarm's security code, a login's verification code: "security
    code" and "verification code" count only in a text that speaks of a card."""
    assert mask_card_numbers(text) == text
    assert mask_card_numbers(f"Paid by credit card. {text}") == f"Paid by credit card. {in_a_card_payment}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111 12/27 737", "[card ending 1111] 12/27 [security code]"),
        ("4111111111111111, exp 12/2027, 1234", "[card ending 1111], exp 12/2027, [security code]"),
        ("4111-1111-1111-1111 exp. 03/29 - 0737 thanks", "[card ending 1111] exp. 03/29 - [security code] thanks"),
        ("4111111111111111 valid thru 03/29 737", "[card ending 1111] valid thru 03/29 [security code]"),
        ("4111111111111111 １２/２７ ７３７", "[card ending 1111] １２/２７ [security code]"),  # typed in full-width digits
    ],
)
def test_a_security_code_right_after_a_card_number_is_masked_with_or_without_its_expiry(text, expected):
    assert mask_card_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Security Camera 123", "zip code 12345", "CVV 12345", "cvv 12/27", "CID 1234", "ACVV 123", "cvs 123",
        "security code", "code 737", "4111111111111112 737", "[card ending 1111] 737 is not after a card number we masked",
        "4111111111111111 737.50", "CVV 7.37",
        # typed a digit at a time: no label, more than four digits (a phone number), a date, a mixed spacing
        "CVV not provided", "code 7 3 7 5 9 2", "CVV 7 3 7 5 9 2", "card code 7-3-7-5-9-2", "CVV 5 5 5 1 2 3 4", "PO 1 2 3",
        "phone 5 5 5 1 2 3 4", "cvv 1.2.2027", "cvv 1-2-27", "CVV 7 3-7", "CVV 7 3 77",
    ],
)
def test_what_is_no_security_code_is_kept(text):
    """No label or a label glued to letters, five digits (typed a digit at a time too), a date, a
    price, a customer id ("CID"), a number after one that is no card: kept as typed (after the card
    number, if one was masked)."""
    assert mask_card_numbers(text) in (text, text.replace("4111111111111111", "[card ending 1111]"))


def _random_text(rng: random.Random) -> tuple[str, list[str]]:
    """Text mixing words, punctuation, numbers and (sometimes) card numbers; and the cards in it."""
    parts, cards = [], []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.05:
            spacer = rng.choice(["", "", " ", "-", ".", "\u00a0"])  # a code typed a digit at a time, too
            digits = spacer.join(rng.choice("0123456789٤４") for _ in range(rng.randint(2, 5)))
            parts.append(rng.choice(CODE_LABELS) + rng.choice(CODE_GAPS) + digits)
        elif kind < 0.25:
            plain, printed = rng.choice(list(CARDS.items()))
            written = printed.replace(" ", rng.choice(SEPARATORS)) if rng.random() < 0.8 else plain
            parts.append(written.translate(rng.choice(list(WIDE_DIGITS.values()))) if rng.random() < 0.2 else written)
            cards.append(plain)
        elif kind < 0.6:
            alphabet = "0123456789 -.\u00a0\u202f\u3000\n\r４٤۴\u2013\u2212\x00\u200b\u00ad\x0b"
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))))
        else:
            parts.append("".join(rng.choice("abcXYZ.,:;/()\"\\\n\t€é#+–“”Àア（で") for _ in range(rng.randint(1, 6))))
    return rng.choice([" ", "", ", ", "\n"]).join(parts), cards


def test_the_fast_path_never_misses_what_the_scanner_masks():
    """Whatever the scanner would mask (card numbers, security codes), the fast check over the JSON
    text says "may hold"."""
    rng = random.Random(20260101)
    masked_somewhere = codes_masked = 0
    for _ in range(20_000):
        text, _cards = _random_text(rng)
        masked = mask_card_numbers(text)
        if masked != text:
            masked_somewhere += 1
            codes_masked += SECURITY_CODE_MASK in masked
            assert may_hold_card_data(msgspec.json.encode({"Description": text})), text
            assert may_hold_card_data(msgspec.json.encode([{"Id": "801000000000001AAA", "Description": text}])), text
    assert masked_somewhere > 2000 and codes_masked > 500  # the generator does produce card numbers and codes


def test_card_numbers_standing_alone_never_survive():
    rng = random.Random(7)
    for _ in range(5000):
        plain, printed = rng.choice(list(CARDS.items()))
        written = rng.choice([plain, printed.replace(" ", rng.choice(SEPARATORS))])
        text = f"{rng.choice(['', 'Card: ', 'pay ', '#', '('])}{written}{rng.choice(['', '.', ' exp 12/27', ')', '!'])}"
        record = {"Description": text}
        assert mask_records([record]) == {0: ["Description"]}
        assert plain not in digits_of(record["Description"])
        assert f"[card ending {plain[-4:]}]" in record["Description"]


def test_a_page_without_card_numbers_is_left_alone():
    """Ids, timestamps, amounts and addresses, as the sandbox's records have them: no false alarm."""
    page = [
        {
            "Id": f"801000000000{n:03d}AAA",
            "AccountId": f"00100000000{n:03d}YAAQ",
            "OrderNumber": f"{n:08d}",
            "SystemModstamp": "2023-12-06T03:26:45.000+0000",
            "BillingPostalCode": "D02 X285",
            "ShippingStreet": f"{n} Commerce Blvd",
            "TotalAmount": 240.0,
            "Account.Phone": "+1 (555) 123-4567",
        }
        for n in range(500)
    ]
    assert not may_hold_card_numbers(msgspec.json.encode(page))
    assert mask_records(page) == {}


def test_records_are_found_wherever_they_are_in_a_long_page():
    page = [{"Id": f"801{n:012d}AAA", "Description": f"order {n}"} for n in range(200)]
    for position in (0, 63, 64, 150, 199):
        page[position]["Description"] = f"card 4111-1111-1111-1111 on order {position}"
    assert mask_records(page) == {position: ["Description"] for position in (0, 63, 64, 150, 199)}
    assert page[150]["Description"] == "card [card ending 1111] on order 150"
    assert page[151]["Description"] == "order 151"


def test_a_card_number_wrapped_over_lines_is_masked_with_the_security_code_on_the_next_line():
    """A narrow text box wraps a number typed with spaces; some type a group a line, the expiry
    and the code below. The JSON the fast path searches writes the line breaks as escapes."""
    for text, expected in [
        ("Card 4111 1111 1111\n1111 please", "Card [card ending 1111] please"),
        ("Card:\r\n4111\r\n1111\r\n1111\r\n1111\r\n12/27\r\n737", "Card:\r\n[card ending 1111]\r\n12/27\r\n[security code]"),
        ("paid 4111111111111111\n737", "paid [card ending 1111]\n[security code]"),
    ]:
        assert mask_card_numbers(text) == expected
        record = {"Id": "801000000000001AAA", "Description": text}
        assert may_hold_card_data(msgspec.json.encode([record]))
        assert mask_records([record]) == {0: ["Description"]}
        assert record["Description"] == expected
    # lines of numbers that are no card stay: a list of room numbers, a year under a phone number
    for kept in ("Rooms:\n1012\n1013\n1014\n1016", "+49 30 1234 5678\n2026", "Invoice 4111111111111112\n12"):
        assert mask_card_numbers(kept) == kept


@pytest.mark.parametrize("invisible", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_a_card_number_with_characters_nobody_sees_between_its_digits_is_masked(invisible):
    """A NUL (which storage drops: the digits would then be a card number), a control character, a
    soft hyphen, a zero-width space or joiner, a word joiner, a byte-order mark: between the digits,
    in every gap of a printed number or right after a group, the text reads as a card number, and
    the fast path finds it in the records' JSON."""
    for typed in (
        invisible.join("4111111111111111"), "4111 1111 1111 1111".replace(" ", invisible), f"4111{invisible} 1111 1111 1111",
        f"Visa 4111{invisible}1111{invisible}1111{invisible}1111 CVV {invisible}737",
    ):
        masked = mask_card_numbers(f"card {typed} thanks")
        assert "[card ending 1111]" in masked and "4111" not in masked and "737" not in masked, repr(typed)
        record = {"Id": "801000000000001AAA", "PoNumber": typed}
        assert may_hold_card_data(json_bytes([record])), repr(typed)
        assert mask_records([record]) == {0: ["PoNumber"]}
    kept = f"order{invisible} 12, room 4"
    assert mask_card_numbers(kept) is kept  # nothing masked: the text kept as it was, invisible characters and all


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("4111&nbsp;1111&nbsp;1111&nbsp;1111", "[card ending 1111]"),  # pasted with no-break spaces
        ("4111&#160;1111&#160;1111&#160;1111", "[card ending 1111]"),
        ("5555<br>5555<br>5555<br>4444", "[card ending 4444]"),  # typed a group a line (shift-enter)
        ("5555<br />5555<BR/>5555<br>4444", "[card ending 4444]"),
        ("<p>3782</p><p>822463</p><p>10005</p>", "<p>[card ending 0005]</p>"),  # a paragraph a group (enter)
        ("<p>6011</p>\n<p>1111</p>\n<p>1111</p>\n<p>1117</p>", "<p>[card ending 1117]</p>"),
        ("<div>3056</div><div>930902</div><div>5904</div>", "<div>[card ending 5904]</div>"),
        ("4111&nbsp; 1111 &nbsp;1111&nbsp;1111", "[card ending 1111]"),
    ],
)
def test_a_card_number_in_a_rich_text_fields_html_is_masked(typed, shown):
    """A Rich Text Area field holds HTML: a number pasted with no-break spaces is stored with
    ``&nbsp;`` between its groups, one typed a group a line with ``<br>`` or a paragraph a group.
    Shown, it is a card number: masked, its security code after it too, found by the fast path."""
    text = f"<p>Paid by card:</p><p>{typed}</p><p>exp 12/27 737</p>"
    masked = mask_card_numbers(text)
    assert masked == f"<p>Paid by card:</p><p>{shown}</p><p>exp 12/27 {SECURITY_CODE_MASK}</p>", masked
    record = {"Id": "801000000000001AAA", "Notes__c": text}
    assert may_hold_card_data(json_bytes([record]))
    assert mask_records([record]) == {0: ["Notes__c"]}
    # rich text without a card number is kept: a list of rooms, an invoice number failing the Luhn check
    for kept in ("<p>Rooms:<br>1012<br>1013<br>1014<br>1016</p>", "<p>Invoice 4111111111111112</p><p>12</p>", "A&amp;B&nbsp;Ltd"):
        assert mask_card_numbers(kept) is kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Visa 4111 1111 1111 1111 (737)", "Visa [card ending 1111] ([security code])"),
        ("Visa 4111 1111 1111 1111 expiry date 12/27 737", "Visa [card ending 1111] expiry date 12/27 [security code]"),
        ("Visa 4111 1111 1111 1111 good thru 12/27 737", "Visa [card ending 1111] good thru 12/27 [security code]"),
        ("Visa 4111 1111 1111 1111 valid through 12/2027, 737", "Visa [card ending 1111] valid through 12/2027, [security code]"),
        ("Visa 4111 1111 1111 1111\r\n\r\n737", "Visa [card ending 1111]\r\n\r\n[security code]"),
        ("4111 1111 1111 1111 12/27 code 737", "[card ending 1111] 12/27 code [security code]"),
        ("Please use CVV code 737 with the card on file", "Please use CVV code [security code] with the card on file"),
        ("card\u00a0code: 737", "card\u00a0code: [security code]"),
        ("Card verification\u00a0value 1234", "Card verification\u00a0value [security code]"),
    ],
)
def test_a_security_code_in_brackets_after_other_expiry_labels_or_named_code_is_masked(text, expected):
    assert mask_card_numbers(text) == expected
    assert may_hold_card_data(json_bytes({"Description": text}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CVV: 7 3 7", "CVV: [security code]"),
        ("cvc 1 2 3 4", "cvc [security code]"),
        ("Paid by card, security code: 7-3-7", "Paid by card, security code: [security code]"),
        ("cvv2 0.4.2.1 thanks", "cvv2 [security code] thanks"),
        ("Visa, verification number 7 3 7 5.", "Visa, verification number [security code]."),
        ("card code 7\u20133\u20137", "card code [security code]"),  # an en dash between its digits
        ("CVV\u00a07\u00a03\u00a07", "CVV\u00a0[security code]"),  # no-break spaces
        ("CVV ７ ３ ７", "CVV [security code]"),  # typed in full-width digits
        ("CVV 7 3 7 12/27", "CVV [security code] 12/27"),  # the expiry date after it
        ("CVV 7 3 7\nthanks", "CVV [security code]\nthanks"),
        ("4111 1111 1111 1111 7 3 7", "[card ending 1111] [security code]"),  # right after a card number
        ("4111111111111111 12/27 7-3-7", "[card ending 1111] 12/27 [security code]"),
    ],
)
def test_a_security_code_typed_with_spaces_dashes_or_dots_between_its_digits_is_masked(text, expected):
    """One space, dash or dot between each two of its digits, the same each time: read as the code
    it is, and found by the fast path in the records' JSON."""
    assert mask_card_numbers(text) == expected
    record = {"Id": "801000000000001AAA", "Description": text}
    assert may_hold_card_data(json_bytes([record]))
    assert mask_records([record]) == {0: ["Description"]}
    assert record["Description"] == expected


def _repeat_bounds(tree: re._parser.SubPattern) -> Iterator[int]:
    """The upper bound of every repeat in a parsed regular expression, lookarounds included."""
    for op, arguments in tree:
        if op in (re._constants.MAX_REPEAT, re._constants.MIN_REPEAT, re._constants.POSSESSIVE_REPEAT):
            yield arguments[1]
        stack = [arguments]
        while stack:
            argument = stack.pop()
            if isinstance(argument, re._parser.SubPattern):
                yield from _repeat_bounds(argument)
            elif isinstance(argument, tuple | list):
                stack.extend(argument)


def test_the_security_code_patterns_are_bounded_so_a_long_text_is_scanned_in_linear_time():
    """Every repeat in the security-code patterns has an upper bound, so a match (and every attempt
    at one) is a few dozen characters at most: each position of a text costs a bounded amount, and
    no text makes the scan backtrack without end. Long runs of spaced digits after a label are
    scanned as any text is (and kept: more than four digits are no code)."""
    for pattern in (
        redaction._CARD_LABELLED_CODE, redaction._OTHER_LABELLED_CODE, redaction._CODE_AFTER_CARD, redaction._CARD_CONTEXT,
    ):
        tree = re._parser.parse(pattern.pattern, pattern.flags)
        assert re._constants.MAXREPEAT not in set(_repeat_bounds(tree)), pattern.pattern
        assert tree.getwidth()[1] < 100, pattern.pattern
    for adversarial in (
        "cvv " + "1 " * 100_000, "cvv 1 " * 33_000, ("CVV: " + "7 " * 5) * 13_000, "card security code " + "1.1." * 50_000,
        "cvv " + "1" * 200_000,
    ):
        assert len(adversarial) > 190_000
        assert mask_card_numbers(adversarial) == adversarial


def usps_tracking_number(rng: random.Random, length: int) -> str:
    """A random USPS tracking number (22 or 26 digits, its mod-10 check digit with weights 3 and 1)."""
    body = "9" + "".join(rng.choice("0123456789") for _ in range(length - 2))
    weighted = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(body)))
    return body + str((10 - weighted % 10) % 10)


def test_usps_tracking_numbers_printed_in_fours_are_kept_whole():
    """USPS prints its 22- and 26-digit numbers in fours, the last group shorter: a 4-4-4-4 stretch
    inside passes the Luhn check one time in ten, and must not be taken for a card (nor the group
    after it for a security code)."""
    rng = random.Random(22)
    for _ in range(2000):
        digits = usps_tracking_number(rng, rng.choice([22, 26]))
        printed = " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))
        assert mask_card_numbers(f"USPS {printed}") == f"USPS {printed}"
    assert mask_card_numbers("USPS 9400 7720 4056 0865 6907 07") == "USPS 9400 7720 4056 0865 6907 07"
    # a card in its own fours beside a number that is no USPS one is still masked
    assert mask_card_numbers("4111 1111 1111 1111 2027 12") == "[card ending 1111] [security code] 12"


def test_tabs_are_found_in_json_after_an_escaped_backslash_and_a_backslash_before_t_is_no_tab():
    pasted = "path C:\\\t4111\t1111\t1111\t1111"  # a backslash, then the number's cells
    assert may_hold_card_numbers(msgspec.json.encode({"Description": pasted}))
    assert mask_card_numbers(pasted) == "path C:\\\t[card ending 1111]"
    # "\\t" in a path is a backslash and a letter: glued to the number, it is no separator
    assert mask_card_numbers("C:\\t4111111111111111") == "C:\\t4111111111111111"
