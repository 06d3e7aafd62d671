"""Phones compared as numbers (leads/phones.py): E.164 where the library parses them,
else their digits."""

from __future__ import annotations

import pytest

from pollybot_leads.leads.phones import phone_key, to_e164


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("+1 (415) 555-2671", "+14155552671"),
        ("+14155552671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1-555-123-4567", "+15551234567"),  # fictional, but a possible length: kept
        ("415-555-2671", None),  # no + and no region: not a number on its own
        ("+1 2", None),  # too short for its country
        ("+999 123", None),  # no such country
        ("", None),
        (None, None),
        ("+" + "1" * 300, None),  # past what is parsed
    ],
)
def test_to_e164(phone, e164):
    assert to_e164(phone) == e164


def test_a_region_parses_national_numbers():
    assert to_e164("(415) 555-2671", "US") == "+14155552671"
    assert to_e164("020 7946 0958", "GB") == "+442079460958"


def test_the_key_is_e164_else_the_digits():
    assert phone_key("+1 (415) 555-2671") == phone_key("+1.415.555.2671") == "+14155552671"
    assert phone_key("(020) 7946 0958") == phone_key("020-7946-0958") == "#02079460958"
    assert phone_key("+44 20 7946 0958") != phone_key("020 7946 0958")
    assert phone_key("call me") is None and phone_key(None) is None
    assert phone_key("\u0664\u0661\u0665") is None  # digits of other scripts are not ours
