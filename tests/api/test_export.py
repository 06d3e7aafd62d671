"""GET …/leads/export: NDJSON and CSV, the list's filters, each lead once while others
write, tenant isolation, bad parameters, and a client that goes away."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from datetime import timedelta
from typing import Any

import pytest
from pymongo import monitoring

from pollybot_leads import app as app_module
from pollybot_leads.app import create_app
from pollybot_leads.leads.documents import build_lead_document
from pollybot_leads.leads.export_routes import CSV_HEADER, csv_cell
from pollybot_leads.store import walks as export_module
from pollybot_leads.timeutil import utcnow

from ..conftest import make_tenant
from .helpers import create_lead, data_of, error_of


def export_url(tenant) -> str:
    return tenant.leads_url + "/export"


async def export(api, tenant, **params) -> tuple[Any, bytes]:
    resp = await api.get(export_url(tenant), params=params, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    return resp, await resp.read()


async def ndjson(api, tenant, **params) -> list[dict[str, Any]]:
    resp, body = await export(api, tenant, **params)
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    text = body.decode()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def listed(api, tenant, **params) -> list[dict[str, Any]]:
    resp = await api.get(tenant.leads_url, params={"limit": 100, **params}, headers=tenant.headers)
    return (await data_of(resp))["leads"]


async def seed(leads_repo, tenant, n: int, *, span=timedelta(days=3), **fields) -> list[dict]:
    """``n`` leads over ``span`` back from now, pairs sharing a creation time."""
    now = utcnow()
    docs = []
    for i in range(n):
        created = now - span + (span / n) * (i // 2 * 2)
        lead = {"name": f"Seeded {i}", "email": f"seeded{i}@example.com", **fields}
        docs.append(build_lead_document(tenant.chatbot_id, tenant.workspace_id, lead, created))
    await leads_repo.insert_many(docs=docs)
    await leads_repo.recount(chatbot_id=tenant.chatbot_id)
    return docs


@pytest.fixture
def small_reads(monkeypatch):
    """Many reads for a few leads: small pages, and first windows far too narrow."""
    monkeypatch.setattr(export_module, "READ_LIMIT", 7)
    monkeypatch.setattr(export_module, "FIRST_WIDTH", timedelta(minutes=5))


async def test_ndjson_is_the_list_newest_first(api, tenant, other_tenant):
    made = [
        await create_lead(api, tenant, name=f"Lead {i}", email=f"l{i}@example.com")
        for i in range(4)
    ]
    await create_lead(api, other_tenant, name="Someone else")
    resp, body = await export(api, tenant)
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="leads-{tenant.chatbot_id}-')
    assert disposition.endswith('.ndjson"')
    assert resp.headers["X-Request-Id"] and "X-RateLimit-Remaining" in resp.headers
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines == await listed(api, tenant)
    assert [x["id"] for x in lines] == [x["id"] for x in reversed(made)]
    oldest_first = await ndjson(api, tenant, sort="createdAt")
    assert [x["id"] for x in oldest_first] == [x["id"] for x in made]


async def test_csv_has_a_header_and_neutralised_cells(api, tenant):
    await create_lead(
        api,
        tenant,
        name="=HYPERLINK(evil)",
        email="-x@example.com",
        phone="+1-555-123-4567",
        source="@web",
        metadata={"utm": "g", "n": 5, "é": [True, None]},
    )
    plain = await create_lead(api, tenant, name='Jo "Jr", Doe', email="jo@example.com")
    resp, body = await export(api, tenant, format="csv")
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"].endswith('.csv"')
    text = body.decode("utf-8")
    assert text.startswith(",".join(CSV_HEADER) + "\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CSV_HEADER)
    assert rows[1] == [
        plain["id"],
        'Jo "Jr", Doe',
        "jo@example.com",
        "",
        "",
        "new",
        plain["createdAt"],
        plain["updatedAt"],
        "{}",
    ]
    evil = dict(zip(CSV_HEADER, rows[2], strict=True))
    assert evil["name"] == "'=HYPERLINK(evil)"
    assert evil["email"] == "'-x@example.com"
    assert evil["phone"] == "'+1-555-123-4567"
    assert evil["source"] == "'@web"
    assert evil["metadata"] == '{"utm":"g","n":5,"é":[true,null]}'
    assert len(rows) == 3


def test_every_formula_start_is_neutralised():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell(start + "1+1") == "'" + start + "1+1"
    assert csv_cell("a=1") == "a=1" and csv_cell(None) == "" and csv_cell("") == ""
    assert csv_cell("'=already") == "'=already"


async def test_filters_are_the_lists(api, tenant):
    for i in range(9):
        await create_lead(
            api,
            tenant,
            name=f"{['Jo', 'Mary', 'Joan'][i % 3]} Smith{i}",
            email=f"p{i}@example.com",
            status=["new", "contacted", "lost"][i % 3],
            source=["web", "ads"][i % 2],
            metadata={"tier": ["gold", "silver"][i % 2], "seats": i},
        )
    everyone = await ndjson(api, tenant)
    cut = everyone[4]["createdAt"]
    for params in (
        {"status": "new"},
        {"status": "new,lost"},
        {"source": "ads"},
        {"search": "jo"},
        {"email": "P3@example.com"},
        {"metadata.tier": "gold"},
        {"metadata.seats": "4"},
        {"createdAfter": cut},
        {"createdBefore": cut, "sort": "createdAt"},
        {"status": "new,contacted", "source": "web", "search": "jo"},
    ):
        got = await ndjson(api, tenant, **params)
        expected = await listed(api, tenant, **params)
        assert got == expected, params
        assert 0 < len(got) < 9, params


async def test_many_leads_in_both_orders(api, tenant, leads_repo, small_reads):
    """Windows and ties: a few hundred leads over days, read 7 at a time."""
    docs = await seed(leads_repo, tenant, 150)
    ids = [d["_id"] for d in sorted(docs, key=lambda d: (d["createdAt"], d["_id"]))]
    assert [x["id"] for x in await ndjson(api, tenant, sort="createdAt")] == ids
    assert [x["id"] for x in await ndjson(api, tenant)] == ids[::-1]


async def test_another_workspace_cannot_export(api, tenant, other_tenant):
    await create_lead(api, tenant)
    resp = await api.get(export_url(tenant), headers=other_tenant.headers)
    await error_of(resp, 404, "CHATBOT_NOT_FOUND")
    assert await ndjson(api, other_tenant) == []
    await error_of(await api.get(export_url(tenant)), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page": "1"}, "page"),
        ({"limit": "10"}, "limit"),
        ({"cursor": "abc.def"}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"format": "CSV"}, "format"),
        ({"sort": "name"}, "sort"),
        ({"sort": "-updatedAt"}, "sort"),
        ({"status": "nope"}, "status"),
        ({"colour": "red"}, "colour"),
        ({"createdAfter": "yesterday"}, "createdAfter"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(api, tenant, params, named):
    resp = await api.get(export_url(tenant), params=params, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert named in error["details"], error


async def test_an_export_costs_one_token(api, accounts):
    tenant = await make_tenant(accounts, rate_limit_capacity=2, rate_limit_refill=0.001)
    resp, _ = await export(api, tenant)
    assert resp.headers["X-RateLimit-Remaining"] == "1"
    await export(api, tenant, format="csv")
    resp = await api.get(export_url(tenant), headers=tenant.headers)
    await error_of(resp, 429, "RATE_LIMITED")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_a_repeated_format_is_a_400(api, tenant):
    url = export_url(tenant) + "?format=csv&format=ndjson"
    error = await error_of(await api.get(url, headers=tenant.headers), 400, "VALIDATION_ERROR")
    assert "format" in error["details"]


async def test_the_document_describes_the_export(api):
    spec = await (await api.get("/api/docs/openapi.json")).json()
    op = spec["paths"]["/api/v1/chatbots/{chatbotId}/leads/export"]["get"]
    assert op["operationId"] == "exportLeads" and op["tags"] == ["leads"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "429", "503"}
    ok = op["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "text/csv"}
    assert ok["content"]["text/csv"]["example"].startswith(",".join(CSV_HEADER) + "\r\n")
    assert ok["headers"]["Content-Disposition"]["required"] is True
    params = {p["name"]: p for p in op["parameters"]}
    assert params["format"]["schema"]["enum"] == ["ndjson", "csv"]
    assert params["sort"]["schema"]["enum"] == ["-createdAt", "createdAt"]
    assert not {"page", "limit", "cursor"} & set(params)
    assert {"status", "source", "email", "search", "createdAfter", "updatedBefore"} <= set(params)
    assert "exactly once" in op["description"]


async def test_export_is_not_a_lead_id(api, tenant):
    for method in ("PUT", "DELETE", "POST", "PATCH", "OPTIONS"):
        resp = await api.request(method, export_url(tenant), json={}, headers=tenant.headers)
        await error_of(resp, 405, "METHOD_NOT_ALLOWED")
        assert resp.headers["Allow"] == "GET"
    lead = await create_lead(api, tenant)  # the lead routes still take every id
    assert await data_of(await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers))
    await error_of(
        await api.get(tenant.lead_url("exports"), headers=tenant.headers), 404, "LEAD_NOT_FOUND"
    )


@pytest.mark.parametrize("params", [{}, {"status": "new,contacted"}, {"sort": "createdAt"}])
async def test_each_lead_once_while_others_write(
    api, accounts, leads_repo, small_reads, monkeypatch, params
):
    """Leads that exist throughout appear exactly once, whatever is created, updated
    (between two statuses that both match) and deleted while the export runs."""
    monkeypatch.setattr(export_module, "READ_LIMIT", 2)  # a slow export: many reads
    tenant = await make_tenant(accounts, rate_limit_capacity=100_000, rate_limit_refill=10_000)
    docs = await seed(leads_repo, tenant, 160, span=timedelta(hours=6))
    left_alone = await seed(leads_repo, tenant, 10, status="qualified")
    ids = [d["_id"] for d in docs]
    rng = random.Random(7)
    doomed = set(rng.sample(ids, 40))
    stable = [i for i in ids if i not in doomed]
    writes = {"done": 0}
    created: set[str] = set()

    async def write(share: list[str], offset: int) -> None:
        for n, lead_id in enumerate(share, start=offset):
            if lead_id in doomed:
                resp = await api.delete(
                    tenant.lead_url(lead_id), params={"confirm": "true"}, headers=tenant.headers
                )
            else:
                change = {"status": "contacted" if n % 2 else "new", "name": f"Renamed {n}"}
                resp = await api.put(tenant.lead_url(lead_id), json=change, headers=tenant.headers)
            assert resp.status == 200, await resp.text()
            if n % 3 == 0:
                new = await create_lead(api, tenant, name=f"New {n}", email=f"new{n}@ex.com")
                created.add(new["id"])
            writes["done"] += 1

    async def read() -> list[str]:
        while writes["done"] < 8:  # the writers are under way
            await asyncio.sleep(0.01)
        resp = await api.get(export_url(tenant), params=params, headers=tenant.headers)
        assert resp.status == 200
        got = []
        while line := await resp.content.readline():
            got.append(json.loads(line)["id"])
            writes.setdefault("first_line", writes["done"])
            await asyncio.sleep(0)
        writes["last_line"] = writes["done"]
        return got

    work = stable[:60] + list(doomed)
    rng.shuffle(work)
    writers = [write(work[i::4], i * 1000) for i in range(4)]  # four clients at once
    got, *_ = await asyncio.gather(read(), *writers)
    assert len(got) == len(set(got)), "a lead appeared twice"
    seen = set(got)
    assert all(lead_id in seen for lead_id in stable)
    qualified = {d["_id"] for d in left_alone}
    assert seen <= set(ids) | qualified | created  # this chatbot's leads, nothing else
    assert (qualified <= seen) is ("status" not in params)
    # The writes really ran during the export, not only before or after it.
    assert writes["last_line"] > writes["first_line"], writes


class FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "leads":
            self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_client_that_goes_away_stops_the_reads(
    settings, mongo, accounts, leads_repo, aiohttp_client, monkeypatch
):
    counter = FindCounter()

    def counted(cls, s):  # the app's own client, with a listener on its commands
        return cls(s.mongodb_uri, s.mongodb_database, s.mongodb_driver, event_listeners=[counter])

    monkeypatch.setattr(app_module.Mongo, "from_settings", classmethod(counted))
    monkeypatch.setattr(export_module, "READ_LIMIT", 3)
    client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(accounts)
    await seed(leads_repo, tenant, 600, span=timedelta(hours=2))
    resp = await client.get(export_url(tenant), headers=tenant.headers)
    assert resp.status == 200
    await resp.content.readline()
    resp.close()  # drops the connection mid-export
    at_close = counter.finds
    await asyncio.sleep(0.3)
    settled = counter.finds
    await asyncio.sleep(0.5)
    assert counter.finds == settled, "reads went on after the client left"
    assert settled <= at_close + 3
    assert settled < 600 / 3 / 2  # far from the whole export's reads
