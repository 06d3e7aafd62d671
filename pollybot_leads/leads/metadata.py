"""Lead metadata: its limits and RFC 7386 JSON Merge Patch.

Metadata is stored as a native document. Keys are restricted (no leading ``$``, no ``.``,
no NUL) so every key is a safe field name and a safe dotted path segment.
"""

from __future__ import annotations

import json
from typing import Any

from .rules import METADATA_FILTER_VALUE_MAX, count_filter_values

MAX_KEY_LENGTH = 100
MAX_KEYS_PER_OBJECT = 100
MAX_DEPTH = 5
MAX_SERIALIZED_BYTES = 16 * 1024
# Values a metadata filter can match: each is an entry of a lead's multikey index, which
# costs the store on every write of the lead (docs/benchmarks.md, "Batches at their
# limits"). 16 KiB alone would allow about 5,000 (100 keys of 50 small integers).
MAX_FILTER_VALUES = 1000
FILTER_VALUES_RULE = (
    "a filterable value is a top-level string of at most "
    f"{METADATA_FILTER_VALUE_MAX} characters, number or boolean, or such an element of a "
    "top-level array, counted once per key and value"
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INF = float("inf")


def metadata_problems(value: Any, *, path: str = "metadata") -> dict[str, list[str]]:
    """Every limit ``value`` breaks, keyed by the offending dotted path; empty when valid.

    Depth counts containers, the metadata object itself included: ``{"a": 1}`` has depth
    1, ``{"a": {"b": [1]}}`` depth 3; at most MAX_DEPTH levels may nest.
    """
    problems: dict[str, list[str]] = {}
    if not isinstance(value, dict):
        return {path: ["Must be an object."]}
    _check_object(value, path, 1, problems)
    if not problems:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_SERIALIZED_BYTES:
            problems[path] = [
                f"Serialized metadata is {size} bytes; the limit is {MAX_SERIALIZED_BYTES}."
            ]
    if not problems and count_filter_values(value, up_to=MAX_FILTER_VALUES) > MAX_FILTER_VALUES:
        problems[path] = [
            f"Holds more than {MAX_FILTER_VALUES} filterable values (top-level strings, "
            "numbers and booleans, and the elements of top-level arrays, each distinct "
            f"value of a key counted once); the limit is {MAX_FILTER_VALUES}."
        ]
    return problems


def _check_object(
    obj: dict[str, Any], path: str, depth: int, problems: dict[str, list[str]]
) -> None:
    if depth > MAX_DEPTH:
        problems.setdefault(path, []).append(f"Nesting deeper than {MAX_DEPTH} levels.")
        return
    if len(obj) > MAX_KEYS_PER_OBJECT:
        problems.setdefault(path, []).append(f"More than {MAX_KEYS_PER_OBJECT} keys.")
    for key, item in obj.items():
        key_path = f"{path}.{key}"
        bad = _key_problem(key)
        if bad:
            problems.setdefault(f"{path}.{_printable(key)}", []).append(bad)
            continue
        _check_value(item, key_path, depth, problems)


def _check_value(item: Any, path: str, depth: int, problems: dict[str, list[str]]) -> None:
    if isinstance(item, dict):
        _check_object(item, path, depth + 1, problems)
    elif isinstance(item, list):
        # Arrays count as a level too, so no container nests without bound.
        if depth + 1 > MAX_DEPTH:
            problems.setdefault(path, []).append(f"Nesting deeper than {MAX_DEPTH} levels.")
            return
        for index, element in enumerate(item):
            _check_value(element, f"{path}[{index}]", depth + 1, problems)
    elif isinstance(item, bool):
        return
    elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
        problems.setdefault(path, []).append("Integers must fit in 64 bits.")
    elif isinstance(item, float) and (item != item or item in (INF, -INF)):
        problems.setdefault(path, []).append("Not a finite number.")


def _key_problem(key: str) -> str | None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"Keys must be 1-{MAX_KEY_LENGTH} characters."
    if key.startswith("$"):
        return "Keys may not start with '$'."
    if "." in key:
        return "Keys may not contain '.'."
    if "\x00" in key:
        return "Keys may not contain NUL."
    return None


def _printable(key: str) -> str:
    return key.replace("\x00", "\\u0000")[: MAX_KEY_LENGTH + 10]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of merging ``patch`` into ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
