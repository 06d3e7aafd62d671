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

# Longest prefix indexed per search term; longer query words are checked in full too.
SEARCH_PREFIX_MAX = 16
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


def search_prefixes(terms: list[str]) -> list[str]:
    """Every prefix (up to SEARCH_PREFIX_MAX characters) of every term."""
    out: set[str] = set()
    for term in terms:
        for end in range(1, min(len(term), SEARCH_PREFIX_MAX) + 1):
            out.add(term[:end])
    return sorted(out)


def query_words(search: str) -> list[str]:
    """The words of a search string, folded; each must begin some term of a match."""
    words = []
    for raw in fold(search).split():
        word = raw.strip(_EDGE_PUNCT)
        if word and word not in words:
            words.append(word)
    return words
