"""Schemathesis hooks for tests/api/test_schemathesis.py: the rules OpenAPI 3.0 cannot say.

The document states each of these rules in prose (and the server answers 400 when one
is broken), but a JSON Schema in OpenAPI 3.0 cannot express it, so schemathesis would
draw "schema-valid" values the server rightly refuses. The hook changes only values
that the schema allows and the prose forbids, keeping what the schema does constrain
(types, patterns, lengths, counts); schemathesis then classifies the case again, as
valid or invalid, from what is actually sent:

- metadata keys (1-100 characters, no leading ``$``, no ``.`` or NUL: 3.0 has no
  ``propertyNames``), nesting depth, 64-bit integers, the 16 KiB size and the 1,000
  filterable values;
- a ``cursor`` is one the server signed (a drawn one that fits the pattern is dropped);
- ``createdBefore``/``updatedBefore`` later than their ``…After``, and dates within
  1900-01-01..9999-01-01 (date-time formats have no bounds);
- ``search`` has 1-8 words once folded (a pattern can say "not blank", not "a word");
- a batch's items may be anything (each is judged alone), but integers in them fit in
  64 bits (else the body is not JSON the server reads), and its valid leads keep within
  the batch's index entries (the last items are left out until they do);
- an ``Idempotency-Key`` names one change: each call gets a fresh one (a drawn key reused
  with another body is rightly a 422);
- an ``If-Match`` can only match a tag the server gave: a drawn one becomes ``*`` (a
  drawn tag is rightly a 412);
- a webhook's ``chatbotIds`` name chatbots of the key's workspace (a drawn list of
  well-formed ids becomes the test tenant's chatbot, or stays empty);
- an ``externalId`` names one person: a valid drawn one gets a fresh suffix on every
  call (a drawn id used again, the example's above all, is rightly a 409);
- an upsert has what it matches on: with ``?upsert=phone`` a phone that parses (a drawn
  one that does not becomes ``+14155552671``), with ``?upsert=externalId`` an external id
  (a fresh one when none is drawn);
- a merge and a duplicates read name leads of the chatbot: a drawn well-formed lead id
  in their path becomes the test's prepared target, a drawn list of well-formed
  ``sourceIds`` one of its prepared sources (a source merged once is then rightly a 404
  ``LEAD_MERGED``);
- an API key's ``expiresAt`` is in the future (a drawn past or out-of-range time becomes
  a day from now), and a chatbot's ``defaultRegion`` is one the phone library knows (a
  drawn two capitals it does not know become ``US``).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario

from pollybot_leads.errors import AppError
from pollybot_leads.http.body import load_fields
from pollybot_leads.http.fields import CONTROL_RE, NON_BLANK
from pollybot_leads.idempotency.middleware import KEY_MAX
from pollybot_leads.leads.documents import new_lead_index_entries
from pollybot_leads.leads.metadata import (
    MAX_DEPTH,
    MAX_FILTER_VALUES,
    MAX_KEY_LENGTH,
    MAX_KEYS_PER_OBJECT,
    MAX_SERIALIZED_BYTES,
)
from pollybot_leads.leads.phones import is_region, to_e164
from pollybot_leads.leads.query import (
    CURSOR_PATTERN,
    DATE_MAX,
    DATE_MIN,
    SEARCH_MAX_LENGTH,
    SEARCH_MAX_WORDS,
)
from pollybot_leads.leads.rules import count_filter_values, query_words
from pollybot_leads.leads.schemas import LeadCreateSchema
from pollybot_leads.leads.writes import BATCH_MAX_INDEX_ENTRIES

INT64 = 2**63 - 1
CHATBOT_ID = re.compile(r"^cb_[0-9a-f]{16}$")
SEARCH = re.compile(NON_BLANK)
IDEMPOTENCY_KEY = re.compile(r"[ -~]+")  # the documented pattern


def _bad_key(key: str) -> bool:
    return not 1 <= len(key) <= MAX_KEY_LENGTH or key[0] == "$" or "." in key or "\0" in key


def _valid_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Rename refused keys to fresh ones: the object keeps its size."""
    taken = {k for k in obj if not _bad_key(k)}
    out: dict[str, Any] = {}
    for index, (key, value) in enumerate(obj.items()):
        if _bad_key(key):
            key = f"k{index}"
            while key in taken:
                key += "_"
            taken.add(key)
        out[key] = value
    return out


def _within_limits(value: Any, depth: int) -> Any:
    """``depth`` containers already enclose ``value``."""
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        items = list(_valid_keys(value).items())[:MAX_KEYS_PER_OBJECT]
        return {k: _within_limits(v, depth + 1) for k, v in items}
    if isinstance(value, list):
        return [_within_limits(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return max(-INT64 - 1, min(INT64, value))
    return value


def _int64(value: Any) -> Any:
    """Batch items are any JSON (each is judged alone), but the body's integers fit in
    64 bits."""
    if isinstance(value, dict):
        return {k: _int64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int64(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return max(-INT64 - 1, min(INT64, value))
    return value


def valid_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The same top-level keys' count, within every limit the prose states."""
    out = {k: _within_limits(v, 1) for k, v in _valid_keys(metadata).items()}
    for key in list(out):
        size = len(json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode())
        if size <= MAX_SERIALIZED_BYTES:
            break
        out[key] = None
    for key in list(out):
        if count_filter_values(out, up_to=MAX_FILTER_VALUES) <= MAX_FILTER_VALUES:
            break
        out[key] = None
    return out


_create = LeadCreateSchema()


def _index_entries(item: Any) -> int:
    """The index entries of the lead a batch item makes (0 for an item that fails)."""
    if not isinstance(item, dict):
        return 0
    try:
        return new_lead_index_entries(load_fields(_create, item))
    except AppError:  # the item fails alone: it writes nothing
        return 0


def within_index_entries(items: list[Any]) -> list[Any]:
    while len(items) > 1 and sum(map(_index_entries, items)) > BATCH_MAX_INDEX_ENTRIES:
        items = items[:-1]
    return items


def _date(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def follow_query_prose(query: dict[str, Any]) -> None:
    cursor = query.get("cursor")
    if isinstance(cursor, str) and re.fullmatch(CURSOR_PATTERN, cursor) and len(cursor) <= 512:
        del query["cursor"]  # well-formed, but not signed by the server
    for name in ("createdAfter", "createdBefore", "updatedAfter", "updatedBefore"):
        when = _date(query.get(name, ""))
        if when is not None and not DATE_MIN <= when <= DATE_MAX:
            del query[name]
    for low, high in (("createdAfter", "createdBefore"), ("updatedAfter", "updatedBefore")):
        after, before = _date(query.get(low, "")), _date(query.get(high, ""))
        if after is not None and before is not None and after >= before:
            del query[high]
    search = query.get("search")
    if isinstance(search, str) and SEARCH.fullmatch(search) and len(search) <= SEARCH_MAX_LENGTH:
        if not 1 <= len(query_words(search)) <= SEARCH_MAX_WORDS:
            del query["search"]


def follow_header_prose(headers: MutableMapping[str, Any]) -> None:
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key) and len(key) <= KEY_MAX:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    if "If-Match" in headers:
        headers["If-Match"] = "*"


def _about_a_missing_header(case: Any) -> bool:
    """A coverage case that leaves out a required header (``Authorization``) is sent
    without it only while it stays negative; any edit to its headers has schemathesis
    judge them again, without that header (it is no declared parameter), as valid, and
    put it back. Such a case must go as drawn (with no ``Authorization`` its drawn
    ``Idempotency-Key`` or ``If-Match`` is never looked at: it is a 401)."""
    data = case.meta.phase.data if case.meta is not None else None
    return (
        isinstance(data, CoveragePhaseData)
        and data.scenario == CoverageScenario.MISSING_PARAMETER
        and data.parameter_location == ParameterLocation.HEADER
    )


def fresh_external_id(lead: dict[str, Any]) -> None:
    """A valid ``externalId`` (1-255 characters, not blank, no control characters) made
    unique; an invalid one is left as drawn."""
    value = lead.get("externalId")
    if isinstance(value, str) and 0 < len(value) <= 255 and value.strip():
        if not CONTROL_RE.search(value):
            lead["externalId"] = f"{value[:200]}-{uuid.uuid4().hex}"


def follow_admin_prose(body: dict[str, Any]) -> None:
    when = _date(body.get("expiresAt", "")) if isinstance(body.get("expiresAt"), str) else None
    if when is not None and not datetime.now(UTC) + timedelta(minutes=1) < when <= DATE_MAX:
        body["expiresAt"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    region = body.get("defaultRegion")
    if isinstance(region, str) and re.fullmatch("[A-Z]{2}", region) and not is_region(region):
        body["defaultRegion"] = "US"


LEAD_ID = re.compile(r"^lead_[0-9a-f]{16}$")


def follow_upsert_prose(query: dict[str, Any], body: dict[str, Any]) -> None:
    on = query.get("upsert")
    if on == "phone" and to_e164(body.get("phone")) is None:
        body["phone"] = "+14155552671"
    if on == "externalId" and body.get("externalId") is None:
        body["externalId"] = f"upsert-{uuid.uuid4().hex}"


def follow_merge_prose(case: Any) -> None:
    """Merges and duplicates reads name the prepared leads (PB_SCHEMATHESIS_LEADS: the
    target, then the sources)."""
    prepared = os.environ.get("PB_SCHEMATHESIS_LEADS", "").split(",")
    path = case.operation.path
    if len(prepared) < 2 or not path.endswith(("/merge", "/duplicates")):
        return
    params = case.path_parameters
    if isinstance(params, dict) and LEAD_ID.match(str(params.get("leadId", ""))):
        params["leadId"] = prepared[0]
    body = case.body
    sources = body.get("sourceIds") if isinstance(body, dict) else None
    if isinstance(sources, list) and 1 <= len(sources) <= 10:
        if all(isinstance(i, str) and LEAD_ID.match(i) for i in sources):
            if len(set(sources)) == len(sources):
                body["sourceIds"] = [prepared[1 + uuid.uuid4().int % (len(prepared) - 1)]]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Every phase's cases pass here, just before each call (schemathesis re-reads their
    kind, valid or invalid, after the edit). ``case.headers`` is a case-insensitive
    mapping, not a ``dict``."""
    if isinstance(case.query, dict):
        follow_query_prose(case.query)
    if isinstance(case.headers, MutableMapping) and not _about_a_missing_header(case):
        follow_header_prose(case.headers)
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"] = valid_metadata(body["metadata"])
    if isinstance(body, dict):
        fresh_external_id(body)
        follow_admin_prose(body)
        if isinstance(case.query, dict):
            follow_upsert_prose(case.query, body)
    follow_merge_prose(case)
    if isinstance(body, dict) and isinstance(body.get("leads"), list):
        items = [_int64(item) for item in body["leads"]]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict):
                item["metadata"] = valid_metadata(item["metadata"])
            if isinstance(item, dict):
                fresh_external_id(item)
        body["leads"] = within_index_entries(items)
    chatbots = body.get("chatbotIds") if isinstance(body, dict) else None
    if isinstance(chatbots, list) and chatbots and len(chatbots) <= 100:
        if all(isinstance(c, str) and CHATBOT_ID.match(c) for c in chatbots):
            if len(set(chatbots)) == len(chatbots):
                body["chatbotIds"] = [os.environ["PB_SCHEMATHESIS_CHATBOT_ID"]]
