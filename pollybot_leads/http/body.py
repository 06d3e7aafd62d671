"""Reading a request: a JSON body (media type, size, syntax and shape, in that order),
and query parameters by a schema."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError
from multidict import MultiMapping

from .. import appkeys
from ..errors import InvalidJson, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidJson(f"Duplicate key in JSON object: {key[:100]!r}")
        obj[key] = value
    return obj


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidJson("Number out of range")
    return value


def _parse_int(text: str) -> int:
    if len(text) > 20:  # also refuses pathological digit strings before converting
        raise InvalidJson("Integer out of range (64-bit signed)")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidJson("Integer out of range (64-bit signed)")
    return value


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")


def decode_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidJson("Request body is empty")
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
        )
        # Lone surrogates ("\ud800") parse but cannot be stored: refuse them here.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except InvalidJson:
        raise
    except (UnicodeError, ValueError, RecursionError):
        raise InvalidJson("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidJson("Request body must be a JSON object")
    return value


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if not request.body_exists and "Content-Type" not in request.headers:
        raise InvalidJson("Request body is empty")
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("JSON bodies must be UTF-8")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"Request body is over {max_bytes} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"Request body is over {max_bytes} bytes") from None
    if len(raw) > max_bytes:  # a body without Content-Length, under the app-wide limit
        raise PayloadTooLarge(f"Request body is over {max_bytes} bytes")
    return decode_json_object(raw)


def load_fields(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` validated by ``schema``; a 400 naming every offending field."""
    try:
        fields: dict[str, Any] = schema.load(body)
        return fields
    except ValidationError as exc:
        raise ValidationFailed(details=exc.messages) from None


async def load_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The request's JSON object (within the configured size), validated by ``schema``."""
    body = await read_json_object(request, request.app[appkeys.settings_key].max_body_bytes)
    return load_fields(schema, body)


def load_query(query: MultiMapping[str], schema: Schema) -> dict[str, Any]:
    """Each parameter once, known and valid, or a 400 naming every bad one."""
    repeated = {n for n in query if len(query.getall(n)) > 1}
    if repeated:
        raise ValidationFailed(
            "Invalid query parameters", details={n: ["Give this parameter once."] for n in repeated}
        )
    try:
        loaded: dict[str, Any] = schema.load(dict(query))
        return loaded
    except ValidationError as exc:
        raise ValidationFailed("Invalid query parameters", details=exc.messages) from None
