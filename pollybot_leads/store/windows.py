"""The adaptive window every windowed reader uses: how wide a range of an ordered field
(a span of time, or of string positions) its next read covers.

A read bounded by a window examines the keys inside it and no others, whether or not
the store stops a scan at the limit (store/quirks.py, ``limit_reads_whole_range``). The
width follows what reads found: wider after a read that held fewer items than wanted,
narrower after one cut at its limit. A window only ever narrows a scan; the caller
reads on until its range is covered, so a width never changes what is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Window:
    """A window's width (a timedelta, or a number of string positions) and its rules.

    ``least``/``most``: the narrowest and widest it gets (``most`` None: no limit).
    ``widen`` after a read that was not cut at its limit: by ``aim`` times the share of
    the wanted items it missed, were they spread evenly, between ``growth_min`` and
    ``growth_max`` times; by ``empty_growth`` (default ``growth_max``) when it held none
    or nothing is known of the items' density.
    """

    width: Any
    least: Any
    most: Any = None
    growth_min: float = 1.0
    growth_max: float = 2.0
    aim: float = 1.0
    empty_growth: float | None = None

    def widen(self, held: int = 0, wanted: int = 0) -> None:
        """After a whole read holding ``held`` of the ``wanted`` items (0: unknown)."""
        if held <= 0:
            factor = self.growth_max if self.empty_growth is None else self.empty_growth
        else:
            factor = min(max(self.growth_min, self.aim * wanted / held), self.growth_max)
        self.width = self._most(self.width * factor)

    def narrow(self, span: Any) -> None:
        """After a read cut at its limit: half as wide as it, or as ``span`` (the part
        of it that was read) when that is narrower."""
        self.width = max(min(self.width, span) / 2, self.least)

    def fit(self, span: Any) -> None:
        """A read's worth of items lay within ``span``: the next window as wide."""
        self.width = self._most(max(span, self.least))

    def _most(self, width: Any) -> Any:
        return width if self.most is None else min(width, self.most)
