"""Positions of strings, so that a range of strings can be sized like a range of times.

A window of a read sorted on a string field (store/paging.py) spans a number of
positions from its origin; ``string_edge`` turns the far end back into a string.
"""

from __future__ import annotations

import bisect

# A string's position is a number: its first STRING_DIGITS characters, each the rank
# of its class of characters (0: past the end or a control character). Digits, letters
# a-z, the space and the usual punctuation of names are each a class of their own;
# other characters fall in a few broad classes by code point, and the digits stop after
# one of those (two strings that differ only within such a class must not be ordered by
# what follows it). So the number never decreases as strings increase (they compare by
# code point, as an index orders them). Made for folded (lower-case) names.
_CLASS_STARTS = (
    0x20,  # space
    0x21,
    0x27,  # '
    0x28,
    0x2D,  # -
    0x2E,  # .
    0x2F,
    *range(0x30, 0x3A),  # 0-9
    0x3A,
    *range(0x61, 0x7B),  # a-z
    0x7B,
    0x80,
    0x250,
    0x400,
    0x530,
    0x3000,
    0xA000,
    0xE000,
)
_SINGLE = frozenset(
    rank
    for rank in range(1, len(_CLASS_STARTS))
    if _CLASS_STARTS[rank] - _CLASS_STARTS[rank - 1] == 1
)
STRING_BASE = len(_CLASS_STARTS) + 1
STRING_DIGITS = 12
STRING_TOP = STRING_BASE**STRING_DIGITS
# The span of strings that begin with a letter a-z.
LETTERS_SPAN = 26 * STRING_BASE ** (STRING_DIGITS - 1)


def _ranks(text: str) -> list[int]:
    """The ranks a position is made of: up to STRING_DIGITS, the last one past which
    nothing counts (a broad class, or the end)."""
    ranks = []
    for char in text[:STRING_DIGITS]:
        rank = bisect.bisect_right(_CLASS_STARTS, ord(char))
        ranks.append(rank)
        if rank not in _SINGLE:
            break
    return ranks


def string_position(text: str) -> int:
    """Where ``text`` lies in the order of strings, between 0 and STRING_TOP."""
    ranks = _ranks(text)
    position = 0
    for i in range(STRING_DIGITS):
        position = position * STRING_BASE + (ranks[i] if i < len(ranks) else 0)
    return position


def class_floor(text: str) -> str:
    """A string no greater than ``text`` that keeps nothing of it but the class of its
    first character: that class's first character ("" for an empty ``text`` or one
    beginning with a control character). Its position is the class's own."""
    if not text:
        return ""
    rank = bisect.bisect_right(_CLASS_STARTS, ord(text[0]))
    return chr(_CLASS_STARTS[rank - 1]) if rank else ""


def class_ceiling(text: str) -> str:
    """A string greater than ``text`` that keeps nothing of it but the class of its first
    character: the next class's first character (past the last class, U+10FFFF, which
    only a string beginning with it can pass)."""
    rank = bisect.bisect_right(_CLASS_STARTS, ord(text[0])) if text else 0
    return chr(_CLASS_STARTS[rank]) if rank < len(_CLASS_STARTS) else chr(0x10FFFF)


def _digits(position: int) -> list[int]:
    digits = []
    for _ in range(STRING_DIGITS):
        position, digit = divmod(position, STRING_BASE)
        digits.append(digit)
    return digits[::-1]


def string_edge(origin: str, position: int) -> str:
    """A string at about ``position``: ``origin``'s own characters as long as the digits
    agree with the position's, then the first character of each digit's class. Above
    ``origin`` when the position is, below it when the position is."""
    digits = _digits(min(max(position, 0), STRING_TOP - 1))
    ranks = _ranks(origin)
    own = ranks + [0] * (STRING_DIGITS - len(ranks))
    same = next((i for i in range(STRING_DIGITS) if digits[i] != own[i]), STRING_DIGITS)
    counted = len(ranks)
    if same >= counted and ranks and ranks[-1] not in _SINGLE:
        # Above the origin but within the class its digits stop at: past that class.
        last = counted - 1
        if ranks[last] < len(_CLASS_STARTS):
            return origin[:last] + chr(_CLASS_STARTS[ranks[last]])
        return origin[:last] + chr(0x10FFFF) * (len(origin) - last + 1)
    edge = origin[:same]
    for digit in digits[same:]:
        if digit == 0:
            break
        edge += chr(_CLASS_STARTS[digit - 1])
    return edge
