"""Plain lead rules: statuses, field limits, the search vocabulary."""

from __future__ import annotations

import re
import unicodedata

STATUSES = ("new", "contacted", "qualified", "converted", "lost", "follow_up")
DEFAULT_STATUS = "new"
STATUS_HISTORY_LIMIT = 100

NAME_MAX = 200
EMAIL_MAX = 254
PHONE_MAX = 32
SOURCE_MAX = 64
PHONE_RE = re.compile(r"^[0-9 +\-().]+\Z")

SEARCH_MAX_WORDS = 8

_WORD_SPLIT = re.compile(r"[^0-9a-z]+")
_LOCAL_SPLIT = re.compile(r"[._+\-]+")
_EDGE_PUNCT = "\"'`()[]{}<>,;:!?*"


def fold(text: str) -> str:
    """Lower-case, accent-free form used on both sides of a search."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.casefold()


def search_terms(name: str, email: str) -> list[str]:
    """The words a lead can be found by: each begins a match.

    Name: every whitespace-separated word and its alphanumeric pieces ("Jean-Luc" gives
    "jean-luc", "jean", "luc"). Email: the whole address, the local part and its pieces
    split at ``. _ - +``, the domain and its labels.
    """
    terms: set[str] = set()
    for word in fold(name).split():
        word = word.strip(_EDGE_PUNCT)
        if word:
            terms.add(word)
            terms.update(piece for piece in _WORD_SPLIT.split(word) if piece)
    address = fold(email)
    terms.add(address)
    local, _, domain = address.rpartition("@")
    for part in (local, domain):
        if part:
            terms.add(part)
    terms.update(piece for piece in _LOCAL_SPLIT.split(local) if piece)
    terms.update(label for label in domain.split(".") if label)
    return sorted(terms)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no bound).

    Strings compare by code point, as MongoDB compares UTF-8 bytes, so ``[prefix, bound)``
    is exactly the strings that start with ``prefix``.
    """
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def query_words(search: str) -> list[str]:
    """The words of a search string, folded; each must begin some term of a match."""
    words = []
    for raw in fold(search).split():
        word = raw.strip(_EDGE_PUNCT)
        if word and word not in words:
            words.append(word)
    return words
