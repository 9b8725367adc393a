"""Country names as people type them -> ISO 3166-1 alpha-2 codes.

Salesforce address fields are free text unless the org enables State and Country
picklists, so the same country arrives as "USA", "U.S.A.", "United States" or
"us". pycountry supplies the official names and codes; a small alias table covers
the usual variants it does not know ("UK", "Deutschland", "Holland", ...).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache

import pycountry

# Normalised spelling -> alpha-2, for names pycountry does not carry.
_ALIASES = {
    "america": "US",
    "united states": "US",
    "us of a": "US",
    "uk": "GB",
    "britain": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "deutschland": "DE",
    "holland": "NL",
    "nederland": "NL",
    "belgie": "BE",
    "belgique": "BE",
    "osterreich": "AT",
    "schweiz": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "espana": "ES",
    "italia": "IT",
    "polska": "PL",
    "sverige": "SE",
    "norge": "NO",
    "danmark": "DK",
    "suomi": "FI",
    "eire": "IE",
    "brasil": "BR",
    "russia": "RU",
    "turkey": "TR",
    "ivory coast": "CI",
    "macedonia": "MK",
    "brunei": "BN",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "vatican": "VA",
    "vatican city": "VA",
    "palestine": "PS",
    "dr congo": "CD",
    "drc": "CD",
    "micronesia": "FM",
    "uae": "AE",
    "south korea": "KR",
    "north korea": "KP",
    "macau": "MO",
    "macau sar": "MO",
    "macao sar": "MO",
    "hong kong sar": "HK",
    "prc": "CN",
    "mainland china": "CN",
    "republic of ireland": "IE",
    "east timor": "TL",
    "czech": "CZ",
    "slovak republic": "SK",
    "kyrgyz republic": "KG",
    # Not in ISO 3166-1: the code the EU, SWIFT and most carriers use for it.
    "kosovo": "XK",
}

_PUNCTUATION = re.compile(r"[.,'’()\-]")
_SPACES = re.compile(r"\s+")
_SAINT = re.compile(r"\bst(?:e)? ")


def normalise_country(text: str) -> str:
    """Accents, case, punctuation and a leading "the" removed: "The U.S.A." -> "usa"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    plain = _SPACES.sub(" ", _PUNCTUATION.sub("", plain.replace("&", " and "))).strip()
    return plain.removeprefix("the ")


@cache
def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    # The ISO names written as a list sorts them ("Korea, Republic of", "Virgin Islands, U.S."):
    # people write them the other way round ("Republic of Korea", "US Virgin Islands") or by the
    # first part alone ("Iran", "Moldova", "Holy See") where only one country is called so ("Korea"
    # is two).
    first_parts: dict[str, set[str]] = {}
    for country in pycountry.countries:
        for attribute in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
            value = getattr(country, attribute, None)
            if value:
                index.setdefault(normalise_country(value), country.alpha_2)
                if ", " in value:
                    first, rest = value.split(", ", 1)
                    index.setdefault(normalise_country(f"{rest} {first}"), country.alpha_2)
                    first_parts.setdefault(normalise_country(first), set()).add(country.alpha_2)
                if " (" in value:  # "Holy See (Vatican City State)", "Saint Martin (French part)"
                    first_parts.setdefault(normalise_country(value.split(" (", 1)[0]), set()).add(country.alpha_2)
    for first, codes in first_parts.items():
        if len(codes) == 1:
            index.setdefault(first, codes.pop())
    index.update(_ALIASES)
    return index


def resolve_country_code(country: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code for a country name or code, or None if it is not recognised."""
    if not isinstance(country, str):
        return None
    return _code_of(country)


# Normalising costs more than the rest of an address; a run sees a few hundred spellings at most.
@lru_cache(maxsize=1024)
def _code_of(country: str) -> str | None:
    key = normalise_country(country)
    if not key:
        return None
    if key not in _index() and all(len(token) == 1 for token in key.split()):
        key = key.replace(" ", "")  # initials written apart: "U. S. A."
    if key not in _index():
        key = _SAINT.sub("saint ", key)  # "St. Lucia", "St Kitts and Nevis"
    return _index().get(key)


__all__ = ["normalise_country", "resolve_country_code"]
