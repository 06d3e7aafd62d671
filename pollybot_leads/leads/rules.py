"""Plain lead rules: statuses, field limits, the search vocabulary."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import orjson

from ..timeutil import format_ts

STATUSES = ("new", "contacted", "qualified", "converted", "lost", "follow_up")
DEFAULT_STATUS = "new"
STATUS_HISTORY_LIMIT = 100

NAME_MAX = 200
EMAIL_MAX = 254
PHONE_MAX = 32
SOURCE_MAX = 64
EXTERNAL_ID_MAX = 255
PHONE_RE = re.compile(r"^[0-9 +\-().]+\Z")

SEARCH_MAX_WORDS = 8
# Longest prefix of a search term kept for exact-match lookup; longer words are checked
# against the whole terms as well.
SEARCH_PREFIX_MAX = 16
# Metadata values longer than this are not indexed (a filter value cannot be longer).
METADATA_FILTER_VALUE_MAX = 200

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
    """Every prefix, up to SEARCH_PREFIX_MAX characters, of every term."""
    out: set[str] = set()
    for term in terms:
        out.update(term[:end] for end in range(1, min(len(term), SEARCH_PREFIX_MAX) + 1))
    return sorted(out)


def word_matches(word: str, terms: list[str]) -> bool:
    """Whether a (folded) search word begins one of a lead's terms."""
    return any(term.startswith(word) for term in terms)


def _tagged(value: Any) -> tuple[str, str] | None:
    """A metadata value as (kind, text), or None if it is not indexed.

    Numbers are written so that 5 and 5.0 give the same text (as they compare equal),
    and each value is tagged with its kind so that "5" and 5 stay different entries.
    """
    if isinstance(value, bool):
        return "b", "true" if value else "false"
    if isinstance(value, int):
        return "n", str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        whole = value.is_integer() and abs(value) < 2**63
        return "n", str(int(value)) if whole else repr(value)
    if isinstance(value, str) and len(value) <= METADATA_FILTER_VALUE_MAX:
        return "s", value
    return None


def metadata_entry(key: str, value: Any) -> str | None:
    """One (key, value) of metadata as a single indexable string, or None if not indexed."""
    tagged = _tagged(value)
    if tagged is None:
        return None
    return json.dumps([key, *tagged], ensure_ascii=False, separators=(",", ":"))


def _filter_values(metadata: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(key, kind, text) of every top-level scalar value and scalar element of an array."""
    for key, value in metadata.items():
        for item in value if isinstance(value, list) else (value,):
            tagged = _tagged(item)
            if tagged is not None:
                yield key, *tagged


def metadata_index_entries(metadata: dict[str, Any]) -> list[str]:
    """Entries for every top-level scalar value, and every scalar element of an array."""
    entries = {
        json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))
        for value in _filter_values(metadata)
    }
    return sorted(entries)


def count_filter_values(metadata: dict[str, Any], *, up_to: int) -> int:
    """How many entries ``metadata_index_entries`` gives (without making them), counted
    up to ``up_to`` + 1 at most: enough to tell that a limit of ``up_to`` is passed."""
    seen: set[tuple[str, str, str]] = set()
    for value in _filter_values(metadata):
        seen.add(value)
        if len(seen) > up_to:
            break
    return len(seen)


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


def render_lead(lead: dict[str, Any]) -> dict[str, Any]:
    """A lead as the API shows it: its datetimes as ``2024-01-15T10:30:00.000Z``."""
    out = dict(lead)
    out["createdAt"] = format_ts(lead["createdAt"])
    out["updatedAt"] = format_ts(lead["updatedAt"])
    if "statusHistory" in lead:
        out["statusHistory"] = [
            {"status": h["status"], "changedAt": format_ts(h["changedAt"])}
            for h in lead["statusHistory"]
        ]
    return out


def rendered_etag(rendered: dict[str, Any]) -> str:
    """A strong ETag of a lead as the API shows it (``render_lead``): it changes exactly
    when a field does."""
    canonical = orjson.dumps(rendered, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return '"' + hashlib.sha256(canonical).hexdigest()[:32] + '"'


def lead_etag(lead: dict[str, Any]) -> str:
    """The ETag of a lead read from the store (``rendered_etag`` of its rendering)."""
    return rendered_etag(render_lead(lead))


def etag_matches(header: str, etag: str, *, weak: bool = False) -> bool:
    """Whether an If-Match (strong comparison) or If-None-Match (``weak=True``) header
    value names ``etag``, or is ``*``."""
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags or (weak and f"W/{etag}" in tags)
