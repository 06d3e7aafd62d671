"""Name windows (store/positions.py): a name's position follows the index's order, and
a window's edge lies on the side of its origin that the position does."""

import random

from pollybot_leads.leads.rules import fold
from pollybot_leads.store.positions import STRING_TOP as NAME_TOP
from pollybot_leads.store.positions import string_edge as name_edge
from pollybot_leads.store.positions import string_position as name_position

ALPHABET = "aabcjjoz -'.0Zéöß李Ωж\U0001f600\ue000\x01!/\U0010ffff"


def names(n: int) -> list[str]:
    rng = random.Random(5)
    out = ["", "a", "jo", "john", "john doe", "john doe" * 3, "z" * 20]
    while len(out) < n:
        out.append(fold("".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 16)))))
    return out


def test_positions_never_decrease_as_names_increase():
    ordered = sorted(names(2000))  # code point order: the index's order of strings
    positions = [name_position(n) for n in ordered]
    assert positions == sorted(positions)
    assert all(0 <= p < NAME_TOP for p in positions)


def test_an_edge_lies_beyond_its_origin_on_the_positions_side():
    rng = random.Random(9)
    for origin in names(600):
        at = name_position(origin)
        for width in (1, 10**6, 10**15, rng.randrange(1, NAME_TOP)):
            if at + width < NAME_TOP:
                edge = name_edge(origin, at + width)
                assert edge > origin, (origin, width, edge)
                edge.encode()  # a string the store can hold (no lone surrogates)
            if at - width > 0:
                edge = name_edge(origin, at - width)
                assert edge < origin, (origin, width, edge)


def test_a_names_class_bounds_it_and_keeps_nothing_of_it_but_the_class():
    """The name bounds kept beside the lead counters (leads/counters.py): below and
    above the name, one character each, the same for every name of the class."""
    from pollybot_leads.store.positions import class_ceiling, class_floor

    for name in names(2000):
        low, high = class_floor(name), class_ceiling(name)
        # Nothing is above U+10FFFF: a name beginning with it is only bounded below (the
        # windows starting there read on regardless: store/paging.py).
        assert low <= name and (name < high or name.startswith(high)), (name, low, high)
        assert len(low) <= 1 and len(high) == 1
        assert class_floor(low) == low  # a floor is its own class's first character
        if name:
            assert name_position(low) <= name_position(name) <= name_position(high)
    assert (class_floor("secret person"), class_ceiling("secret person")) == ("s", "t")
    assert class_floor("ßigrid") == class_floor("émile") == "\x80"
    assert class_floor("") == "" and class_floor("\x01x") == ""
