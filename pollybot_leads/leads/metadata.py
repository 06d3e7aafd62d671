"""Lead metadata: its limits and RFC 7386 JSON Merge Patch.

Metadata is stored as a native document. Keys are restricted (no leading ``$``, no ``.``,
no NUL) so every key is a safe field name and a safe dotted path segment.
"""

from __future__ import annotations

import json
from typing import Any

MAX_KEY_LENGTH = 100
MAX_KEYS_PER_OBJECT = 100
MAX_DEPTH = 5
MAX_SERIALIZED_BYTES = 16 * 1024
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
