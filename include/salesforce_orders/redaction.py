"""Card numbers out of every text the pipeline reads: one scanner for records and error texts.

The import never selects card fields, but people type card numbers where they do not belong: into
the notes (Description), the PO number, an Account name, any field a mapping reads, and Salesforce
quotes them back in its own messages (a validation rule rejecting a write-back). Every text value
of every extracted record (and every number: a Number field may hold a card number too) goes
through :func:`mask_record` before it is staged, and Salesforce's
error messages through :func:`mask_card_numbers` before they are stored or logged.

What counts as a card number: 13 to 19 digits that pass the Luhn check, written plain or in the
groupings cards are printed in (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4), separated by spaces
(the no-break and thin spaces a number pasted from a web page or a PDF carries too, the en, em
and hair spaces of a typeset text, and the ideographic space of a Japanese or Chinese keyboard),
tabs (a number pasted from a spreadsheet's cells), line breaks (a number wrapped in a narrow text
box, or typed a group a line), dashes or dots, and in a rich text field's HTML ``&nbsp;``, ``<br>``
and paragraph tags, up to three of them between two groups, standing alone: not glued to letters or digits, as in a Salesforce Id
(``801000000000123AAA``). It is replaced by ``[card ending 1111]``: at most the last four digits
stay. The digits are ASCII ones or those other keyboards type: full-width (``４１１１``, a Japanese
or Chinese input method) and Arabic-Indic (``٤١١١``, both sets). Other long numbers (phone
numbers, Ids, tracking numbers) fail the Luhn check or do not have a card's grouping, and are
kept as they are. A card's security code is masked too (``[security code]``): right after a card
number (or its expiry date), or after its label (``CVV 737``, typed a digit at a time too: ``CVV 7 3 7``).

The scan runs over every value of every record of a run, so it is made cheap for the usual case,
records without a single card number: a run of records is encoded as JSON at once, its bytes
mapped to character classes, and four substring searches tell whether any run of digits there
could be a card number (:func:`may_hold_card_numbers`). Only runs that could are looked into,
record by record, and the records that could are scanned value by value.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

MIN_DIGITS, MAX_DIGITS = 13, 19

# What may stand between a card number's groups: a space (also the no-break, figure, thin and
# narrow no-break spaces that text pasted from a web page or a PDF holds, the en, em, three-, four-
# and six-per-em, punctuation and hair spaces of a typeset text, and the ideographic space of a
# Japanese or Chinese keyboard), a tab (a number pasted from a spreadsheet, one group a cell),
# a line break (a number wrapped by a narrow text box, or typed a group a line; ``\r\n`` counts as
# one), a dash (the hyphens, dashes and minus signs a word processor or another keyboard types too)
# or a dot.
_SPACES = "\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u3000"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d"
_SEPARATORS = f" \t\r\n{_SPACES}{_DASHES}.-"
# Characters nobody sees (C0 controls but the tab and line breaks, DEL, the soft hyphen, zero-width
# spaces and joiners, the word joiner, a byte-order mark, the left-to-right, right-to-left and Arabic
# letter marks a number copied from a right-to-left page carries): the scan reads a text without
# them, as a person reads it and as the warehouse may store it (``storable`` drops NULs, so
# "4111<NUL>1111..." would be a card number once stored).
_INVISIBLE = (
    "".join(chr(code) for code in [*range(0x20), 0x7F] if chr(code) not in "\t\n\r")
    + "\u00ad\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u061c"
)
_WITHOUT_INVISIBLE = str.maketrans(dict.fromkeys(_INVISIBLE))
_AN_INVISIBLE = re.compile(f"[{re.escape(_INVISIBLE)}]")
# The digits a card number may be typed in: ASCII, full-width (a Japanese or Chinese input method)
# and both sets of Arabic-Indic digits. (Not every Unicode digit, as \d would take: the fast path
# below must find each kind the scanner masks.)
_WIDE_DIGIT_SETS = tuple(
    "".join(chr(zero + value) for value in range(10))
    for zero in (0xFF10, 0x0660, 0x06F0)  # full-width, Arabic-Indic, Extended Arabic-Indic (Persian, Urdu)
)
_DIGITS = "0-9" + "".join(f"{digits[0]}-{digits[-1]}" for digits in _WIDE_DIGIT_SETS)
_AS_ASCII_DIGITS = str.maketrans({wide: str(value) for digits in _WIDE_DIGIT_SETS for value, wide in enumerate(digits)})
# A Rich Text Area field holds HTML: a number pasted with no-break spaces is stored with ``&nbsp;``
# between its groups, one typed a group a line with ``<br>``, or a paragraph a group (``</p><p>``:
# two separators). Shown, that is a card number: each entity or tag is one separator. (The entities
# as written, the tags in any case: the fast path below looks for a ``<``, ``&nbsp;`` and ``&#160;``.)
_HTML_GAP = r"&nbsp;|&#160;|(?i:<br ?/?>|</?(?:p|div)>)"
# A run of at least 13 digits, up to three separators between two of them ("4111 - 1111",
# "4111  1111"), standing alone. Most texts have none, so this one search is all the scan costs them.
_GAP = f"(?:\r\n|{_HTML_GAP}|[{_SEPARATORS}])"
_RUN = re.compile(rf"(?<![{_DIGITS}A-Za-z])[{_DIGITS}](?:{_GAP}{{0,3}}[{_DIGITS}]){{12,}}(?![{_DIGITS}A-Za-z])")
_SEPARATOR = re.compile(f"(?:{_HTML_GAP}|[{_SEPARATORS}])+")
# The other spaces, dashes, digits and invisible characters take two or three bytes in UTF-8 (a
# control character, one: JSON escapes it). The fast path below spots them by a byte rare in Latin
# text (their last byte; the first byte of the digits, of the ideographic space, whose last byte
# Cyrillic letters end in, of the soft hyphen, whose last byte ends "í", of the Arabic letter mark,
# whose last byte ends the curly quote "“", and of the full-width and small forms, whose first byte
# the full-width digits share), then makes each space
# or dash a plain space, each digit an ASCII digit, drops the invisible ones, and takes the bytes'
# classes again. (Not by a byte they share with common punctuation: the middle byte of U+3000 is
# that of every curly quote, which would send most texts the slow way.)
_WIDE_DIGITS = tuple(  # (the digits' first byte, [(each digit's bytes, its ASCII digit)])
    (digits[0].encode()[:-1], [(wide.encode(), str(value).encode()) for value, wide in enumerate(digits)])
    for digits in _WIDE_DIGIT_SETS
)
_SPOTTED_BY_FIRST_BYTE = ("\u3000", "\u00ad", "\u061c", "\ufe63", "\uff0d", "\ufeff")


def _spot(char: str) -> bytes:
    return char.encode()[0 if char in _SPOTTED_BY_FIRST_BYTE else -1 :][:1]


# (the byte that spots a character, its UTF-8, what the scan reads instead)
_PLAIN_FORMS = [(_spot(char), char.encode(), b" ") for char in _SPACES + _DASHES] + [
    (_spot(char), char.encode(), b"") for char in _INVISIBLE if char >= "\x7f"
]
_WIDE_BYTES = frozenset([spot[0] for spot, _, _ in _PLAIN_FORMS] + [lead[0] for lead, _ in _WIDE_DIGITS])
# A card number typed into a Number field and sent in exponent form (``4.11111111111116E15``: the
# digits of one ending in zeros) is a Decimal that JSON writes so: 13 digits or more, an exponent
# of 12 or more. (A float that large holds no card's digits exactly, and is never masked.)
# (A regular expression finds it faster than ``in`` does: CPython searches a literal prefix with memchr.)
_EXPONENT_OF_A_CARD_NUMBER = re.compile(rb"E\+1")
# A tab or a line break as JSON writes it: a backslash (punctuation) and a letter; ``\r\n``, one
# separator as the scanner counts it. A control character, ``\b``, ``\f`` or ``\u0001``: dropped.
_ESCAPED_SEPARATOR = re.compile(rb"\\(?:r\\n|[tnr])")
_ESCAPED_SEPARATOR_LETTERS = (b"t", b"n", b"r")
_ESCAPED_CONTROL_LETTERS = (b"b", b"f")
_ESCAPED_CONTROL = re.compile(rb"\\(?:u00[01][0-9a-fA-F]|[bf])")
_CONTROL_CODES = frozenset(f"{code:02x}".encode() for code in range(0x20)) | frozenset(f"{code:02X}".encode() for code in range(0x20))
_ASCII_DIGIT = re.compile(rb"[0-9]")
# The HTML separators, as the scanner takes them.
_HTML_GAP_BYTES = re.compile(_HTML_GAP.encode())
# How far from an escape the digit of a group split there may be: two more separators (an escape
# takes two bytes, or six; a wide space, three, sends the text the other way anyway) and a byte.
_NEAR = 14
# How card numbers are printed when grouped: most cards, 19-digit cards, Amex, Diners.
_GROUPINGS = ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 6, 5], [4, 6, 4])
_MOST_GROUPS = max(len(grouping) for grouping in _GROUPINGS)


def _character_class(byte: int, wide_bytes: frozenset[int]) -> int:
    if byte in wide_bytes:
        return ord("w")  # a byte of a wide space or digit, or of another character (à, É) sharing it
    char = chr(byte)
    if char.isascii() and char.isdigit():
        return ord("0")
    if char in " \t-.":
        return ord("s")
    if char.isascii() and char.isalpha():
        return ord("a")
    return ord(".")  # punctuation, line breaks, quotes, non-ASCII: what may stand next to a number


_CLASSES = bytes(_character_class(byte, _WIDE_BYTES) for byte in range(256))
# Once the wide spaces and digits are plain ones: what is left of those bytes is other characters.
_PLAIN_CLASSES = bytes(_character_class(byte, frozenset()) for byte in range(256))
# In those classes, what every card number the scan masks contains: 13 digits or more ending at
# a separator or punctuation (not at a letter, as in a Salesforce Id), or a printed grouping.
_SIGNATURES = (b"0000000000000.", b"0000000000000s", b"0000s0000s0000s0000", b"0000s000000s0000")


def _holds_json_escape_between_digits(data: bytes) -> bool:
    """Whether JSON text holds an escaped tab, line break or control character with a digit a few
    bytes before and after it: a number's groups may be split or hidden there. (Notes of several
    lines are common, and taking their bytes' classes again doubled the scan's cost.) Found from
    backslash to backslash (one byte, searched as fast as a byte can be): a search for the two
    bytes made the scan of records without a card number a fifth slower. An escaped backslash
    followed by a ``t`` is no tab, and is stepped over."""
    at = data.find(b"\\")
    while at >= 0:
        letter = data[at + 1 : at + 2]
        if letter in _ESCAPED_SEPARATOR_LETTERS or letter in _ESCAPED_CONTROL_LETTERS:
            end = at + 2
        elif letter == b"u" and data[at + 2 : at + 4] == b"00" and data[at + 4 : at + 6] in _CONTROL_CODES:
            end = at + 6
        else:
            end = 0
        if end and _ASCII_DIGIT.search(data, max(at - _NEAR, 0), at) and _ASCII_DIGIT.search(data, end, end + _NEAR):
            return True
        at = data.find(b"\\", at + 2)
    return False


def _plain(data: bytes) -> bytes:
    """JSON text with its wide spaces and dashes and its escaped tabs and line breaks made plain
    spaces, its wide digits ASCII ones, and what nobody sees dropped: as the scanner reads it.
    A character is replaced only where the byte that spots it is there (searched as fast as a
    byte can be): a pass over the text for each of them cost more than the rest of the scan."""
    for spot, character, plain in _PLAIN_FORMS:
        if spot in data:
            data = data.replace(character, plain)
    if b"\\" in data:  # (each a regular expression: its backslash found as fast as a byte can be)
        data = _ESCAPED_SEPARATOR.sub(b" ", _ESCAPED_CONTROL.sub(b"", data))
    if _holds_html_gap(data):  # (after what nobody sees is dropped: the scanner reads it so)
        data = _HTML_GAP_BYTES.sub(b" ", data)
    for lead, digits in _WIDE_DIGITS:
        if lead in data:
            for wide, digit in digits:
                data = data.replace(wide, digit)
    return data


def _holds_html_gap(data: bytes) -> bool:
    """Whether text may hold an HTML separator (a rich text field's): a tag, or a no-break space's
    entity. (Each byte found as fast as a byte can be; ``&`` alone is common, "A&B Ltd": the
    entities are looked for where there is one.)"""
    return b"<" in data or (b"&" in data and (b"&nbsp;" in data or b"&#160;" in data))


def may_hold_card_numbers(data: bytes) -> bool:
    """Whether UTF-8 text (a JSON document, say) may hold a card number; False means it holds none."""
    if _EXPONENT_OF_A_CARD_NUMBER.search(data):
        return True
    classes = data.translate(_CLASSES)
    if b"w" in classes or _holds_json_escape_between_digits(data) or _holds_html_gap(data):
        classes = _plain(data).translate(_PLAIN_CLASSES)
    if any(signature in classes for signature in _SIGNATURES):
        return True
    if b"0ss" not in classes:  # no digit followed by two separators: nothing the signatures missed
        return False
    # Two or three separators between digits, one in the signatures: twice halving runs of them
    # leaves one of any run up to four (a run of four or more between digits, the scanner does not
    # take as one number).
    shorter = classes.replace(b"ss", b"s").replace(b"ss", b"s")
    return shorter != classes and any(signature in shorter for signature in _SIGNATURES)


# A card's security code (CVV2, CVC2, CID: three or four digits) typed next to its label, anywhere,
# or right after a card number the scan masks (after its expiry date, too: "4111... 12/27 737").
# Storing it is never allowed (PCI DSS), so it is masked as the number is. The card's own labels
# always count; "security code" and "verification code" only in a text that speaks of a card (an
# installer's note may hold an alarm's security code or a login's verification code). Not "CID"
# alone: that is also how people write a customer's or a case's id. The code may be typed a digit
# at a time ("CVV 7 3 7", "7-3-7", "7.3.7"): one space (or a wide one), one dash or one dot between
# each two of its digits, the same each time, no further digit spaced so after it ("CVV 7 3 7 5 9 2"
# is no code). Every repeat below is bounded: a match is a few dozen characters at most, so the
# search costs each position of a text a bounded amount, and a long text a time linear in its length.
SECURITY_CODE_MASK = "[security code]"
_CODE_SPACERS = f" {_SPACES}{_DASHES}.-"
_CODE = (
    rf"(?P<code>[{_DIGITS}]{{3,4}}(?![{_DIGITS}]|[/.,][{_DIGITS}])"
    rf"|[{_DIGITS}](?P<spacer>[{_CODE_SPACERS}])[{_DIGITS}](?:(?P=spacer)[{_DIGITS}]){{1,2}}"
    rf"(?![{_DIGITS}]|[/.,][{_DIGITS}]|(?P=spacer)[{_DIGITS}](?![{_DIGITS}])))"
)
_CARD_CODE_LABEL = r"cvv2?|cvc2?|cvn2?|card\W{1,2}code|card\W{1,2}verification\W{0,2}(?:code|value|number)"
_OTHER_CODE_LABEL = r"security\W{1,2}code|verification\W{0,2}(?:code|value|number)"
_CARD_CONTEXT = re.compile(
    r"(?ai)(?<![a-z])(?:cards?|visa|master ?card|amex|american express|discover|credit|debit)(?![a-z])|\[card ending"
)


def _labelled_code(labels: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?ai)(?<![a-z0-9])(?P<label>(?:{labels})(?![a-z])(?:\W{{0,3}}(?:is|was|no|number|nr|code)\b)?\W{{0,4}}){_CODE}"
    )


_CARD_LABELLED_CODE = _labelled_code(_CARD_CODE_LABEL)
_OTHER_LABELLED_CODE = _labelled_code(_OTHER_CODE_LABEL)
# What the fast path looks for in the lowered bytes: every label above holds one of these, where
# no letter or digit stands before it (or the letter ends a JSON escape: a line break, a control
# character). Few, each search being a pass over the bytes: not "security" (a product may be called
# "Security Camera"). "code" is in every item ("ProductCode", a letter before it): its occurrences
# are looked at by a regular expression (its literal start found fast, its look-behinds in C), not
# one by one in Python.
_BOUNDED_CODE_STEMS = (b"cv", b"verification")
_BOUNDED_CODE = re.compile(rb"code(?:(?<![a-z0-9]code)|(?<=\\[a-z]code)|(?<=\\u[0-9a-f]{4}code))")
_MASKED_CARD = r"\[card ending [0-9]{1,4}\]"
MASKED_CARD = re.compile(_MASKED_CARD)  # a card number as card_mask masks it
_EXPIRY_LABEL = r"exp(?:iry|ires|iration)?(?:\W{1,2}date)?|(?:valid|good)(?:\W{1,2}(?:thru|through|until))?"
_EXPIRY = rf"(?:(?:{_EXPIRY_LABEL})\W{{0,3}})?[{_DIGITS}]{{1,2}} ?[/.-] ?(?:[{_DIGITS}]{{4}}|[{_DIGITS}]{{2}})"
_CODE_GAP = rf"(?:\r\n|{_HTML_GAP}|[ \t\r\n,;/.:(#-]){{1,3}}"
_CODE_AFTER_CARD = re.compile(
    rf"(?ai)(?P<label>{_MASKED_CARD}{_CODE_GAP}(?:{_EXPIRY}{_CODE_GAP})?(?:(?:code|cvv2?|cvc2?|cvn2?|cid)\W{{0,3}})?){_CODE}"
)


def _mask_code(match: re.Match[str]) -> str:
    return match.group("label") + SECURITY_CODE_MASK


def may_name_security_code(data: bytes) -> bool:
    """Whether UTF-8 text may hold a labelled security code; False means it holds none."""
    lowered = data.lower()
    if _BOUNDED_CODE.search(lowered):
        return True
    for stem in _BOUNDED_CODE_STEMS:
        at = lowered.find(stem)
        while at >= 0:  # (a Salesforce Id holds "cv" now and then, glued to letters or digits)
            if at == 0 or not lowered[at - 1 : at].isalnum() or _after_json_escape(lowered, at):
                return True
            at = lowered.find(stem, at + 1)
    return False


def _after_json_escape(data: bytes, at: int) -> bool:
    """Whether the letter or digit before ``at`` ends a JSON escape (``\\n``, ``\\u0001``): a line
    break or a control character, which stands apart from what follows as a space does."""
    return data[at - 2 : at - 1] == b"\\" or data[at - 6 : at - 4] == b"\\u"


def may_hold_card_data(data: bytes) -> bool:
    """Whether UTF-8 text may hold a card number or a security code; False means it holds neither."""
    return may_hold_card_numbers(data) or may_name_security_code(data)


def card_mask(digits: str) -> str:
    """What a card number is replaced with: its last four digits only (as ASCII digits)."""
    return f"[card ending {digits[-4:].translate(_AS_ASCII_DIGITS)}]"


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` pass the Luhn check every payment card number passes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_shaped(groups: list[str]) -> bool:
    """Whether digit groups are written as card numbers are: one block, or the printed groupings."""
    lengths = [len(group) for group in groups]
    digits = sum(lengths)
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        return False
    if len(lengths) == 1:
        return True
    return lengths in _GROUPINGS


def _usps_tracking_number(groups: list[str]) -> bool:
    """Whether digit groups are a USPS tracking number as printed (22 or 26 digits beginning with a
    9, in fours but the last, with USPS's check digit): one number, no card hidden in its fours."""
    digits = "".join(groups).translate(_AS_ASCII_DIGITS)
    lengths = [len(group) for group in groups]
    if len(digits) not in (22, 26) or digits[0] != "9" or any(length != 4 for length in lengths[:-1]) or lengths[-1] > 4:
        return False
    weighted = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(digits[:-1])))
    return (10 - weighted % 10) % 10 == int(digits[-1])


def _mask_run(run: str) -> str:
    """A run of digit groups with every card number in it masked.

    From the left, the longest card-shaped, Luhn-valid stretch of whole groups (five at most, as
    many as a printed card number has): "4111 1111 1111 1111 737" loses the number and keeps the
    737. A USPS tracking number, printed in fours too, is kept whole."""
    groups = _SEPARATOR.split(run)
    if _usps_tracking_number(groups):
        return run
    separators = _SEPARATOR.findall(run)
    parts: list[str] = []
    start = 0
    while start < len(groups):
        # (no stretch of more groups than a grouping has is card-shaped: not tried, so a long run,
        # "1 1 1 1 ..." pasted 100,000 times, costs a time linear in its length, not cubic)
        for end in range(min(len(groups), start + _MOST_GROUPS), start, -1):
            window = groups[start:end]
            if _card_shaped(window) and luhn_valid(digits := "".join(window)):
                parts.append(card_mask(digits))
                break
        else:
            end = start + 1
            parts.append(groups[start])
        if end < len(groups):
            parts.append(separators[end - 1])
        start = end
    return "".join(parts)


def _mask_match(match: re.Match[str]) -> str:
    return _mask_run(match.group(0))


def mask_card_numbers(text: str | None) -> str | None:
    """``text`` with every card number and security code in it masked (the same object when
    there is none)."""
    if not text:
        return text
    # (read as a person sees it: what nobody sees left out, so a NUL that storage drops later cannot hide a number)
    scanned = text.translate(_WITHOUT_INVISIBLE) if _AN_INVISIBLE.search(text) else text
    masked = scanned
    if _RUN.search(scanned):
        masked = _RUN.sub(_mask_match, scanned)
        if masked != scanned:
            masked = _CODE_AFTER_CARD.sub(_mask_code, masked)
    masked = _CARD_LABELLED_CODE.sub(_mask_code, masked)
    if _CARD_CONTEXT.search(masked):
        masked = _OTHER_LABELLED_CODE.sub(_mask_code, masked)
    return text if masked == scanned else masked


_NUMBER_TYPES = (Decimal, float, int)  # (not bool: its type is not int)
# The largest whole number a JSON number (a double) holds exactly: above it, a card number typed
# into a Number field has lost its digits already.
_EXACT_IN_A_DOUBLE = 2**53


def card_number_in(value: int | float | Decimal) -> str | None:
    """The digits of a number that is a card number (typed into a Number or Currency field: the
    API sends it as a number, not as text, read as a Decimal or a float), or None."""
    kind = type(value)
    if kind is Decimal:
        if not (value.is_finite() and value == value.to_integral_value()):
            return None
        value = int(value)
    elif kind is float:
        if not (value.is_integer() and abs(value) < _EXACT_IN_A_DOUBLE):
            return None
        value = int(value)
    digits = str(abs(value))  # (typed with a minus, the digits are the card's all the same)
    return digits if MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_valid(digits) else None


def mask_record(record: MutableMapping[str, Any]) -> list[str]:
    """Mask the card numbers and security codes in a record's values, in place; returns the fields
    masked. A card number typed into a number field becomes the mask's text, which the validation
    then quarantines where a number is needed (naming the field, never the number)."""
    masked = []
    for name, value in record.items():
        kind = type(value)
        if kind is str:
            clean = mask_card_numbers(value)
            if clean is not value:
                record[name] = clean
                masked.append(name)
        elif kind in _NUMBER_TYPES and (digits := card_number_in(value)):
            record[name] = card_mask(digits)
            masked.append(name)
    return masked


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value, enc_hook=str)


# Records checked together: a run of them is encoded and searched at once; only a run that may hold
# a card number is looked into record by record. Small enough that one card number costs little
# more, large enough that the calls cost nothing next to the encoding.
_RECORDS_AT_ONCE = 64


def mask_records(
    records: Sequence[MutableMapping[str, Any]], encoded: Sequence[bytes] | None = None
) -> dict[int, list[str]]:
    """Mask the card numbers in the records' text values, in place.

    ``encoded``: each record's JSON, when the caller has it (the staging writes it): searched
    instead of encoding the records again. Returns ``{position of the record: the fields masked}``
    for the records that held any."""
    found = {}
    for start in range(0, len(records), _RECORDS_AT_ONCE):
        run = records[start : start + _RECORDS_AT_ONCE]
        texts = None if encoded is None else encoded[start : start + _RECORDS_AT_ONCE]
        if not may_hold_card_data(_json(run) if texts is None else b",".join(texts)):
            continue
        for position, record in enumerate(run, start):
            text = _json(record) if encoded is None else encoded[position]
            if may_hold_card_data(text) and (fields := mask_record(record)):
                found[position] = fields
    return found


__all__ = [
    "SECURITY_CODE_MASK", "card_mask", "card_number_in", "luhn_valid", "mask_card_numbers", "mask_record", "mask_records", "may_hold_card_data",
    "may_hold_card_numbers", "may_name_security_code",
]
