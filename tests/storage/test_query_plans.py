"""No list query examines another tenant's leads, and the lists it reads are right.

One data set for the module: a big chatbot (2,000 leads) and a small one (30) in the
same collection, with the same kinds of values (statuses, sources, metadata numbers,
booleans, strings and arrays, names and emails that share search prefixes and even
addresses). For every list shape and sort, each find and count the list runs is
explained (executionStats, as run): none may examine more index keys than the small
chatbot holds in the index it used, nor more documents than the small chatbot has. A
single range of the big chatbot's keys or documents is over 60 times that bound.

Each list's result (pages, cursors, totals) must equal a brute-force filter and sort of
the small chatbot's leads: with the store's own plans (on SecantusDB: split reads merged
here, conditions checked here; on a mongod, MONGODB_URI, the plain single queries), with
windowed reads and without; and with the plain single queries on a copy of the small
chatbot's leads, so that they are checked on every store.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring

from pollybot_leads.leads.documents import LIST_PROJECTION, build_lead_document
from pollybot_leads.leads.listing import LeadLister, lead_plan
from pollybot_leads.leads.phones import phone_key
from pollybot_leads.leads.queries import SORTS, LeadQuery
from pollybot_leads.leads.query import metadata_value_candidates
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.rules import STATUSES, fold, search_terms, word_matches
from pollybot_leads.store import paging, positions
from pollybot_leads.store import plans as store_plans
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.quirks import PLAIN
from pollybot_leads.timeutil import to_ms

BIG, SMALL = 2000, 30
# The plain single queries, with inclusive bounds made exclusive (SecantusDB drops leads
# equal to an inclusive bound at the far end of an index range; mongod reads either).
PLAIN_READS = replace(PLAIN, exclusive_time_bounds=True)
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=40)

FIRST = ["John", "Joan", "Johanna", "Mary", "Jo", "Zoë", "Marco", "Jonas"]
LAST = ["Smith", "Garcia", "Jones", "Wolfeschlegelsteinhausenbergerdorff", "Major", "Ångström"]
DOMAINS = ["example.com", "jones.io", "acme.org", "smith.example"]
SOURCES = ["web", "ads", None, "web", "partner"]
# Phones that are one number in two forms, one that does not parse, and none.
PHONES = ["+1 415 555 2671", "+14155552671", "(020) 7946 0958", None, "+44 20 7946 0958"]
METADATA = [
    {"tier": "gold", "seats": 5, "trial": True, "tags": ["vip", "eu"]},
    {"tier": "silver", "seats": "5", "trial": "true"},
    {"tier": "gold", "seats": 5.0, "trial": False, "tags": ["eu"], "foo": "1"},
    {"tier": "bronze", "seats": [5, "5"], "foo": 1},
    {"tier": "gold", "seats": 7, "foo": 1.5, "tags": []},
    {"tier": ["gold", "silver"], "trial": "false", "foo": True},
    {},
]


def lead_fields(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = FIRST[i % len(FIRST)], LAST[(i // 2) % len(LAST)]
    local = f"{first.lower()}.{fold(last)[:8]}{i % 12}"
    return {
        "name": f"{first} {last}",
        "email": f"{local}@{DOMAINS[i % len(DOMAINS)]}",
        "status": STATUSES[(i * 7 + i // 3) % len(STATUSES)],
        "source": SOURCES[i % len(SOURCES)],
        "phone": PHONES[(i // 3) % len(PHONES)],
        # The same external ids in both chatbots (each unique within its own).
        "external_id": f"ext-{i}" if i % 4 else None,
        "metadata": dict(METADATA[rng.randrange(len(METADATA))]),
    }


def seeded(chatbot_id: str, workspace_id: str, n: int, span: timedelta, seed: int) -> list[dict]:
    """``n`` leads over ``span`` back from now; pairs share a creation time, some share
    an update time, so ties between sort values are common."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        created = to_ms(NOW - span + (span / n) * (i // 2 * 2))
        doc = build_lead_document(chatbot_id, workspace_id, lead_fields(rng, i), created)
        doc["_id"] = f"lead_{rng.getrandbits(64):016x}"  # ties between ids: the same each run
        doc["updatedAt"] = created + timedelta(hours=7 * (i // 2 % 3))
        docs.append(doc)
    return docs


def small_query(tenants) -> dict[str, Any]:
    """Filter values taken from the small chatbot's own leads."""
    docs = tenants["small_docs"]
    times = sorted(d["createdAt"] for d in docs)
    updates = sorted(d["updatedAt"] for d in docs)
    return {
        "email": docs[5]["emailFolded"],
        "phone": docs[3]["phoneKey"],  # +14155552671
        "external_id": docs[9]["externalId"],
        "created": (times[6], times[21]),  # both are lead times: after is inclusive
        "updated": (updates[4], updates[25]),
    }


def shapes(tenants) -> dict[str, dict[str, Any]]:
    v = small_query(tenants)
    meta = lambda **kw: tuple((k, metadata_value_candidates(x)) for k, x in kw.items())  # noqa: E731
    return {
        "none": {},
        "status": {"statuses": ("new",)},
        "statuses": {"statuses": ("new", "contacted", "lost")},
        "source": {"sources": ("web",)},
        "sources": {"sources": ("web", "ads")},
        "statuses_and_sources": {
            "statuses": ("new", "contacted", "qualified"),
            "sources": ("web", "partner"),
        },
        "email": {"email": v["email"]},
        "email_and_status": {"email": v["email"], "statuses": ("new", "lost", "qualified")},
        "phone": {"phone": v["phone"]},
        "phone_and_status": {"phone": v["phone"], "statuses": ("new", "lost", "qualified")},
        "external_id": {"external_id": v["external_id"]},
        "created": {"created_after": v["created"][0], "created_before": v["created"][1]},
        "created_after": {"created_after": v["created"][0]},
        "updated": {"updated_after": v["updated"][0], "updated_before": v["updated"][1]},
        "created_and_updated": {
            "created_after": v["created"][0],
            "updated_before": v["updated"][1],
        },
        "metadata_string": {"metadata": meta(tier="gold")},
        "metadata_number": {"metadata": meta(seats="5")},
        "metadata_float": {"metadata": meta(foo="1.5")},
        "metadata_boolean": {"metadata": meta(trial="true")},
        "metadata_array": {"metadata": meta(tags="vip")},
        "metadata_two": {"metadata": meta(tier="gold", seats="5")},
        "metadata_three": {"metadata": meta(seats="5", tier="gold", trial="true")},
        "metadata_unmatched": {"metadata": meta(nothing="x")},
        "metadata_and_statuses": {"metadata": meta(seats="5"), "statuses": ("new", "lost")},
        "search": {"words": ("jo",)},
        "search_two": {"words": ("jo", "garcia")},
        "search_three": {"words": ("jo", "smith", "example")},
        "search_long": {"words": ("wolfeschlegelsteinhausenberger",)},
        "search_long_two": {"words": ("jo", "wolfeschlegelsteinhausenberger")},
        "everything": {
            "statuses": ("new", "lost", "contacted", "qualified"),
            "sources": ("web", "ads"),
            "created_after": v["created"][0],
            "updated_before": v["updated"][1],
            "metadata": meta(seats="5"),
            "words": ("jo",),
        },
    }


SHAPES = [
    "none",
    "status",
    "statuses",
    "source",
    "sources",
    "statuses_and_sources",
    "email",
    "email_and_status",
    "phone",
    "phone_and_status",
    "external_id",
    "created",
    "created_after",
    "updated",
    "created_and_updated",
    "metadata_string",
    "metadata_number",
    "metadata_float",
    "metadata_boolean",
    "metadata_array",
    "metadata_two",
    "metadata_three",
    "metadata_unmatched",
    "metadata_and_statuses",
    "search",
    "search_two",
    "search_three",
    "search_long",
    "search_long_two",
    "everything",
]


# -- the brute force ---------------------------------------------------------------


def _same_value(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(stored, int | float) and isinstance(wanted, int | float):
        return stored == wanted
    return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted


def _matches(doc: dict[str, Any], q: LeadQuery) -> bool:
    if q.statuses and doc["status"] not in q.statuses:
        return False
    if q.sources and doc["source"] not in q.sources:
        return False
    if q.email is not None and fold(doc["email"]) != q.email:
        return False
    if q.phone is not None and phone_key(doc["phone"]) != q.phone:
        return False
    if q.external_id is not None and doc["externalId"] != q.external_id:
        return False
    for field, low, high in (
        ("createdAt", q.created_after, q.created_before),
        ("updatedAt", q.updated_after, q.updated_before),
    ):
        if (low is not None and doc[field] < low) or (high is not None and doc[field] >= high):
            return False
    for key, wanted in q.metadata:
        if key not in doc["metadata"]:
            return False
        value = doc["metadata"][key]
        items = value if isinstance(value, list) else [value]
        if not any(_same_value(item, w) for item in items for w in wanted):
            return False
    terms = search_terms(doc["name"], doc["email"])
    return all(word_matches(word, terms) for word in q.words)


def expected_ids(docs: list[dict[str, Any]], q: LeadQuery) -> list[str]:
    field, direction = SORTS[q.sort]

    def key(doc):
        return (fold(doc["name"]) if field == "nameSort" else doc[field], doc["_id"])

    return [d["_id"] for d in sorted(filter(lambda d: _matches(d, q), docs), key=key)][
        :: -1 if direction < 0 else 1
    ]


# -- what the server examined -----------------------------------------------------


def index_names(node: Any) -> set[str]:
    """The indexes a plan used (its winning plan and execution stages, not rejects)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "indexName" and isinstance(value, str):
                found.add(value)
            elif key != "rejectedPlans":
                found |= index_names(value)
    elif isinstance(node, list):
        for item in node:
            found |= index_names(item)
    return found


def examined(plan: dict[str, Any]) -> tuple[int, int]:
    """(keys, documents) examined by one explained find or aggregate."""
    stats = plan.get("executionStats")
    if stats is None:  # an aggregate that was not pushed down whole: its $cursor stage
        stats = next(s["$cursor"]["executionStats"] for s in plan["stages"] if "$cursor" in s)
    return stats["totalKeysExamined"], stats["totalDocsExamined"]


def index_entries(docs: list[dict[str, Any]]) -> dict[str, int]:
    """How many keys each lead index holds for these leads."""
    n = len(docs)
    entries = dict.fromkeys(
        (
            "_id_",
            "by_created",
            "by_updated",
            "by_name",
            "by_status",
            "by_source",
            "by_status_source",
            "by_email",
        ),
        n,
    )
    entries["by_search"] = sum(len(d["searchPrefixes"]) for d in docs)
    entries["by_metadata"] = sum(max(1, len(d["metadataIndex"])) for d in docs)
    return entries


def assert_only_small_examined(plans: list[dict[str, Any]], tenants, label: str) -> None:
    assert plans, label
    entries = index_entries(tenants["small_docs"])
    total_docs = 0
    for plan in plans:
        assert "hint" not in plan.get("command", {}), label  # a hint scans the whole index
        keys, docs = examined(plan)
        used = index_names(plan)
        # A few keys of slack per index: mongod counts the key that ends each interval.
        keys_bound = sum(entries.get(name, SMALL) + 5 for name in used)
        assert keys <= keys_bound, (label, used, keys, docs, plan.get("command"))
        assert docs <= SMALL, (label, used, keys, docs, plan.get("command"))
        total_docs += docs
    assert total_docs <= SMALL * len(plans), label


# -- the tests --------------------------------------------------------------------


@pytest.fixture
def narrow_windows(monkeypatch) -> None:
    """Windowed reads even for a few matches, starting far too narrow; and room for one
    lead at the cursor's value only (its own), so that its ties are often read apart."""
    monkeypatch.setattr(paging, "TIES_READ", 1)
    monkeypatch.setattr(paging, "FULL_READ_MAX", 0)
    monkeypatch.setattr(store_plans, "DEFAULT_SPAN", timedelta(hours=1))
    span = positions.STRING_BASE ** (positions.STRING_DIGITS - 4)
    monkeypatch.setattr(store_plans, "LETTERS_SPAN", span)
    monkeypatch.setattr(paging, "WINDOW_SLACK", 1)


def lister_for(leads, leads_repo, quirks) -> LeadLister:
    """A lister of its own (nothing learnt yet), on the session's counters."""
    return LeadLister(leads, LIST_PROJECTION, counts=leads_repo.read_counts, quirks=quirks)


async def pages(lister, chatbot_id, query: LeadQuery) -> tuple[list[str], list[str], set]:
    """Every lead of the list, by page/limit and by cursor; and the totals seen."""
    by_page, by_cursor, totals = [], [], set()
    for page in range(1, 20):
        got = await lister.list(chatbot_id, replace(query, page=page))
        totals.add(got.total)
        by_page += [d["_id"] for d in got.leads]
        if not got.has_next:
            break
    after = None
    for _ in range(20):
        got = await lister.list(chatbot_id, replace(query, after=after))
        totals.add(got.total)
        by_cursor += [d["_id"] for d in got.leads]
        if not got.has_next:
            break
        after = got.last_position
    return by_page, by_cursor, totals


@pytest.mark.parametrize("shape", SHAPES)
async def test_lists_examine_only_the_chatbots_own_leads(mongo, leads_repo, tenants, shape):
    lister = lister_for(mongo.db["leads"], leads_repo, mongo.quirks)
    small = tenants["small"]
    for sort in SORTS:
        query = LeadQuery(sort=sort, limit=4, **shapes(tenants)[shape])
        assert_only_small_examined(await lister.explain(small, query), tenants, (shape, sort))
        page = await lister.list(small, query)
        if page.has_next:  # a cursor in the middle, with the same filters; and page 2
            after = replace(query, after=page.last_position)
            plans = await lister.explain(small, after)
            assert_only_small_examined(plans, tenants, (shape, sort, "cursor"))
            deep = replace(query, page=2)
            plans = await lister.explain(small, deep)
            assert_only_small_examined(plans, tenants, (shape, sort, "page 2"))


@pytest.mark.parametrize(
    "mode", ["store, few matches", "store, narrow windows", "plain, narrow windows"]
)
@pytest.mark.parametrize("shape", SHAPES)
async def test_lists_equal_a_brute_force_filter_and_sort(
    mongo, leads_repo, tenants, plain_copy, shape, mode, request
):
    """The store's own plans (split and merged, or checked here, on SecantusDB), and
    the plain single queries a mongod gets; with windowed reads and without."""
    small, docs = tenants["small"], tenants["small_docs"]
    fields = shapes(tenants)[shape]
    if mode.startswith("plain"):
        leads, quirks = plain_copy, PLAIN_READS
    else:
        leads, quirks = mongo.db["leads"], mongo.quirks
        windowed = [lead_plan(small, LeadQuery(sort=s, **fields), mongo.quirks) for s in SORTS]
        if "narrow" in mode and not any(plan.windowable for plan in windowed):
            pytest.skip("no sort of this shape reads in windows on this store")
    if "narrow" in mode:
        request.getfixturevalue("narrow_windows")
    for sort in SORTS:
        if mode == "store, narrow windows" and not windowed[list(SORTS).index(sort)].windowable:
            continue  # never windowed: as with few matches
        query = LeadQuery(sort=sort, limit=8, **fields)
        expected = expected_ids(docs, query)
        lister = lister_for(leads, leads_repo, quirks)  # first windows from the defaults
        by_page, by_cursor, totals = await pages(lister, small, query)
        assert by_page == expected, (shape, sort)
        assert by_cursor == expected, (shape, sort)
        assert totals == {len(expected)}, (shape, sort)


def test_the_shapes_are_not_trivial(tenants):
    """Every filter matches some of the small chatbot's leads and misses others."""
    docs = tenants["small_docs"]
    for shape, fields in shapes(tenants).items():
        n = len(expected_ids(docs, LeadQuery(**fields)))
        assert n < SMALL or shape in ("none",), shape
        assert n > 0 or shape in ("metadata_unmatched", "metadata_three"), shape


@contextlib.asynccontextmanager
async def counted_mongo(settings: Any, counter: CommandCounter) -> AsyncIterator[Mongo]:
    """A client of its own whose every command ``counter`` sees."""
    mongo = Mongo(
        settings.mongodb_uri,
        settings.mongodb_database,
        settings.mongodb_driver,
        event_listeners=[counter],
    )
    try:
        await mongo.connect()
        yield mongo
    finally:
        await mongo.close()


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_page_costs_two_round_trips(settings, accounts, leads_repo):
    """Counters, then one find: the first window holds the page (a few hundred leads
    over three months), for page 1 and for the next page by cursor."""
    workspace = await accounts.create_workspace(name="round trips")
    chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="rt")
    docs = seeded(chatbot["id"], workspace["id"], 400, timedelta(days=90), seed=3)
    await leads_repo.insert_many(docs=docs)
    await leads_repo.recount(chatbot_id=chatbot["id"])
    counter = CommandCounter()
    async with counted_mongo(settings, counter) as mongo:
        repo = LeadRepository(mongo)
        for fields in ({}, {"statuses": ("new",)}, {"statuses": ("lost",), "page": 2}):
            query = LeadQuery(**fields)
            counter.names.clear()
            page = await repo.list(chatbot_id=chatbot["id"], query=query)
            assert len(counter.names) <= 2, (fields, counter.names)
            skip = (query.page - 1) * query.limit
            expected = expected_ids(docs, query)
            assert [d["id"] for d in page.leads] == expected[skip : skip + query.limit]
            assert page.total == len(expected)
            # The next page by cursor: the same two (the cursor's ties come in its read).
            counter.names.clear()
            after = await repo.list(
                chatbot_id=chatbot["id"], query=replace(query, after=page.last_position)
            )
            assert len(counter.names) <= 2, (fields, "cursor", counter.names)
            following = expected[skip + query.limit : skip + 2 * query.limit]
            assert [d["id"] for d in after.leads] == following


WINDOWED_SORTS = ["createdAt", "updatedAt", "name", "-name"]


@pytest.mark.parametrize("shape", ["none", "status", "statuses_and_sources", "sources"])
async def test_oldest_first_and_name_pages_read_in_windows_of_the_chatbots_own_keys(
    mongo, leads_repo, tenants, shape, narrow_windows
):
    """Where a limit does not stop a scan (quirks.limit_reads_whole_range), lists sorted
    oldest first or by name read windows of the sort field, from the chatbot's bounds
    or the cursor: every read within the small chatbot's keys, and some reads narrower
    than all of them. Several statuses with several sources read their pairs from
    by_status_source."""
    if not mongo.quirks.limit_reads_whole_range:
        pytest.skip("a limit stops the scan: plain sort + limit")
    small = tenants["small"]
    for sort in WINDOWED_SORTS:
        lister = lister_for(mongo.db["leads"], leads_repo, mongo.quirks)  # nothing learnt
        query = LeadQuery(sort=sort, limit=4, **shapes(tenants)[shape])
        if not lead_plan(small, query, mongo.quirks).windowable:
            continue
        plans = await lister.explain(small, query)
        assert_only_small_examined(plans, tenants, (shape, sort))
        finds = [p for p in plans if "find" in p.get("command", {})]
        field = SORTS[sort][0]
        assert any(
            isinstance(p["command"]["filter"].get(field), dict)
            and examined(p)[0] < len(expected_ids(tenants["small_docs"], query))
            for p in finds
        ), (shape, sort, [p["command"]["filter"] for p in finds])
        if shape == "statuses_and_sources":
            assert {name for p in plans for name in index_names(p)} == {"by_status_source"}
        after = replace(query, after=(await lister.list(small, query)).last_position)
        assert_only_small_examined(await lister.explain(small, after), tenants, (shape, sort))
