"""Phone numbers compared as numbers: E.164 from the ``phonenumbers`` library (a port of
Google's libphonenumber, kept in step with the numbering plans), never hand-written rules.

A number parses when the library reads it and finds it possible for its country (a
length that country uses); "+1 (415) 555-2671" and "+14155552671" are then the same
number. A number without ``+`` needs a region to parse ("US": national numbers); none is
given yet (chatbots get a ``defaultRegion`` with the admin API), so those, and whatever
does not parse, are compared by their digits alone.
"""

from __future__ import annotations

import phonenumbers

# The longest text parsed: a number is at most 15 digits, and the library's own limit on
# input is 250 characters; a phone field may be longer (it is kept as sent).
_MAX_PARSED = 250
# What a stored key starts with when it holds digits only (the number did not parse).
DIGITS = "#"


def to_e164(phone: str | None, region: str | None = None) -> str | None:
    """``phone`` in E.164 (``+14155552671``), or None where it does not parse."""
    if not phone or len(phone) > _MAX_PARSED:
        return None
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_key(phone: str | None, region: str | None = None) -> str | None:
    """What two phones are compared by: the E.164 form, else ``#`` and the digits (the
    same digits where neither parses), else None (no digits at all)."""
    e164 = to_e164(phone, region)
    if e164 is not None:
        return e164
    digits = "".join(ch for ch in phone or "" if ch.isascii() and ch.isdigit())
    return DIGITS + digits if digits else None


def is_region(code: str) -> bool:
    """A region the library knows (ISO 3166-1 alpha-2, upper case: ``US``, ``GB``)."""
    return code in phonenumbers.SUPPORTED_REGIONS
