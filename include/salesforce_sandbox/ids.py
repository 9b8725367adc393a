"""Salesforce record ids: 15-character case-sensitive ids and their 18-character form.

An id is the object's 3-character key prefix, then a base-62 sequence number padded with
``0`` to 15 characters, then (in the 18-character form) a 3-character suffix that encodes
which of the 15 characters are upper-case letters. The suffix makes the 18-character id
case-insensitive: given it, the original case can be restored.
"""

from __future__ import annotations

BASE62_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
KEY_PREFIX_LENGTH = 3
SHORT_ID_LENGTH = 15
ID_LENGTH = 18
_CHUNK = 5


def _is_ascii_alnum(text: str) -> bool:
    return text.isascii() and text.isalnum()


def checksum_suffix(id15: str) -> str:
    """The 3-character suffix of a 15-character id: one character per 5-character chunk,
    whose index in :data:`SUFFIX_ALPHABET` has bit *i* set when character *i* is upper-case."""
    suffix = ""
    for start in range(0, SHORT_ID_LENGTH, _CHUNK):
        bits = 0
        for position, char in enumerate(id15[start : start + _CHUNK]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += SUFFIX_ALPHABET[bits]
    return suffix


def _restore_case(id18: str) -> str | None:
    """The 18-character id with the case of its first 15 characters taken from the suffix,
    or None when the suffix is not a valid encoding for those characters."""
    body = []
    for chunk_index, suffix_char in enumerate(id18[SHORT_ID_LENGTH:].upper()):
        bits = SUFFIX_ALPHABET.find(suffix_char)
        if bits < 0:
            return None
        chunk = id18[chunk_index * _CHUNK : (chunk_index + 1) * _CHUNK]
        for position, char in enumerate(chunk):
            upper = bool(bits & (1 << position))
            if upper and not char.isalpha():
                return None
            body.append(char.upper() if upper else char.lower())
    id15 = "".join(body)
    return id15 + checksum_suffix(id15)


def to_18(record_id: str) -> str:
    """The 18-character form of a 15- or 18-character id (an 18-character id gets the case
    of its first 15 characters restored from its suffix). Raises ValueError when malformed."""
    if not isinstance(record_id, str) or not _is_ascii_alnum(record_id):
        raise ValueError(f"malformed Salesforce id: {record_id!r}")
    if len(record_id) == SHORT_ID_LENGTH:
        return record_id + checksum_suffix(record_id)
    if len(record_id) == ID_LENGTH:
        if record_id[SHORT_ID_LENGTH:] == checksum_suffix(record_id[:SHORT_ID_LENGTH]):
            return record_id  # already in its canonical case, as nearly every id a client sends
        restored = _restore_case(record_id)
        if restored is not None:
            return restored
    raise ValueError(f"malformed Salesforce id: {record_id!r}")


def is_valid_id(value: object) -> bool:
    """True for a well-formed 15-character id or an 18-character id with a consistent suffix."""
    try:
        to_18(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def queried_id(value: object) -> object:
    """The stored Id a text compared with an Id or lookup field in SOQL finds, as a real org finds
    it: a 15-character id the record whose 18-character Id begins with it (case-sensitively); an
    18-character id the record with that Id, its 3-character suffix compared case-insensitively.
    Other texts are returned as given (they find no record)."""
    if isinstance(value, str) and _is_ascii_alnum(value):
        if len(value) == SHORT_ID_LENGTH:
            return value + checksum_suffix(value)
        if len(value) == ID_LENGTH:
            return value[:SHORT_ID_LENGTH] + value[SHORT_ID_LENGTH:].upper()
    return value


def encode_base62(number: int) -> str:
    if number < 0:
        raise ValueError("base-62 numbers are non-negative")
    digits = ""
    while True:
        number, remainder = divmod(number, 62)
        digits = BASE62_DIGITS[remainder] + digits
        if not number:
            return digits


def make_id(key_prefix: str, sequence: int) -> str:
    """The 18-character id of the ``sequence``-th record (1-based) of the object with ``key_prefix``."""
    counter = encode_base62(sequence)
    width = SHORT_ID_LENGTH - KEY_PREFIX_LENGTH
    if len(key_prefix) != KEY_PREFIX_LENGTH or len(counter) > width:
        raise ValueError(f"cannot build an id from prefix {key_prefix!r} and sequence {sequence}")
    id15 = key_prefix + counter.rjust(width, "0")
    return id15 + checksum_suffix(id15)


__all__ = ["checksum_suffix", "encode_base62", "is_valid_id", "make_id", "queried_id", "to_18"]
