import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pollybot_leads.leads.rules import fold
from pollybot_leads.store import paging, plans, positions

from .helpers import create_lead, data_of, error_of


async def listing(api, tenant, **params):
    return await data_of(await api.get(tenant.leads_url, params=params, headers=tenant.headers))


async def make(api, tenant, n, **fields):
    return [
        await create_lead(api, tenant, name=f"Lead {i}", email=f"lead{i}@example.com", **fields)
        for i in range(n)
    ]


async def test_default_page_is_newest_first_without_history(api, tenant):
    leads = await make(api, tenant, 12)
    data = await listing(api, tenant)
    assert [x["id"] for x in data["leads"]] == [x["id"] for x in reversed(leads)][:10]
    assert all("statusHistory" not in x for x in data["leads"])
    first = {k: v for k, v in leads[-1].items() if k != "statusHistory"}
    assert data["leads"][0] == first
    assert data["pagination"] == {
        "page": 1,
        "limit": 10,
        "total": 12,
        "totalPages": 2,
        "hasNext": True,
        "hasPrev": False,
        "nextCursor": data["pagination"]["nextCursor"],
    }


async def test_pages_cover_everything_once(api, tenant):
    leads = await make(api, tenant, 7)
    seen = []
    for page in (1, 2, 3):
        data = await listing(api, tenant, page=page, limit=3)
        seen += [x["id"] for x in data["leads"]]
        p = data["pagination"]
        assert (p["page"], p["limit"], p["total"], p["totalPages"]) == (page, 3, 7, 3)
        assert p["hasNext"] is (page < 3) and p["hasPrev"] is (page > 1)
    assert seen == [x["id"] for x in reversed(leads)]
    beyond = await listing(api, tenant, page=9, limit=3)
    assert beyond["leads"] == [] and beyond["pagination"]["hasNext"] is False


async def test_empty_list(api, tenant):
    data = await listing(api, tenant)
    assert data == {
        "leads": [],
        "pagination": {
            "page": 1,
            "limit": 10,
            "total": 0,
            "totalPages": 0,
            "hasNext": False,
            "hasPrev": False,
            "nextCursor": None,
        },
    }


async def test_status_and_source_filters_take_several_values(api, tenant):
    a = await create_lead(api, tenant, status="new", source="web")
    b = await create_lead(api, tenant, status="lost", source="ads")
    c = await create_lead(api, tenant, status="converted", source="web")
    ids = lambda data: {x["id"] for x in data["leads"]}  # noqa: E731
    assert ids(await listing(api, tenant, status="new")) == {a["id"]}
    assert ids(await listing(api, tenant, status="new,lost")) == {a["id"], b["id"]}
    assert ids(await listing(api, tenant, source="web")) == {a["id"], c["id"]}
    assert ids(await listing(api, tenant, source="web", status="converted,lost")) == {c["id"]}
    assert ids(await listing(api, tenant, source="ads,web", status="lost")) == {b["id"]}


async def test_search_matches_word_beginnings_of_name_and_email(api, tenant):
    john = await create_lead(api, tenant, name="John Doe", email="jd@acme.org")
    mary = await create_lead(api, tenant, name="Mary Major", email="mary@jones.io")
    zoe = await create_lead(api, tenant, name="Zoë Ångström", email="z.ang+crm@example.com")
    cases = {
        "jo": {john["id"], mary["id"]},
        "JOHN": {john["id"]},
        "doe": {john["id"]},
        "example.com": {zoe["id"]},
        "example": {zoe["id"]},
        "zoe": {zoe["id"]},
        "angstrom": {zoe["id"]},
        "ÅNG": {zoe["id"]},
        "crm": {zoe["id"]},
        "mary@jones": {mary["id"]},
        "ohn": set(),
        "jo major": {mary["id"]},
        "john mary": set(),
        "acme.org jd": {john["id"]},
    }
    for search, expected in cases.items():
        data = await listing(api, tenant, search=search)
        assert {x["id"] for x in data["leads"]} == expected, search
        assert data["pagination"]["total"] == len(expected)


async def test_search_with_long_words(api, tenant):
    lead = await create_lead(
        api, tenant, name="Wolfeschlegelsteinhausenbergerdorff Senior", email="w@example.com"
    )
    found = await listing(api, tenant, search="wolfeschlegelsteinhausenberger")
    assert [x["id"] for x in found["leads"]] == [lead["id"]]
    none = await listing(api, tenant, search="wolfeschlegelsteinhausenbergerX")
    assert none["leads"] == []


async def test_search_treats_regex_characters_literally(api, tenant):
    await create_lead(api, tenant, name="Plain Name", email="p@example.com")
    for search in (".*", "^p", "p|q", "p(q", "[a-z]", "\\"):
        data = await listing(api, tenant, search=search)
        assert data["leads"] == [], search


async def test_email_filter_is_exact_and_case_insensitive(api, tenant):
    lead = await create_lead(api, tenant, email="Mixed.Case@Example.com")
    await create_lead(api, tenant, email="mixed.case@example.com.au")
    data = await listing(api, tenant, email="mixed.case@EXAMPLE.com")
    assert [x["id"] for x in data["leads"]] == [lead["id"]]


async def test_date_ranges(api, tenant, leads_repo, mongo):
    leads = await make(api, tenant, 4)
    base = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    for i, lead in enumerate(leads):  # spread them over four days
        await mongo.db["leads"].update_one(
            {"_id": lead["id"]},
            {
                "$set": {
                    "createdAt": base + timedelta(days=i),
                    "updatedAt": base + timedelta(days=i, hours=1),
                }
            },
        )
    ids = lambda data: [x["id"] for x in data["leads"]]  # noqa: E731
    data = await listing(
        api, tenant, createdAfter="2024-01-16T10:00:00.000Z", createdBefore="2024-01-18T10:00:00Z"
    )
    assert ids(data) == [leads[2]["id"], leads[1]["id"]]  # after inclusive, before exclusive
    data = await listing(api, tenant, updatedAfter="2024-01-17T11:00:00+00:00")
    assert ids(data) == [leads[3]["id"], leads[2]["id"]]
    data = await listing(api, tenant, updatedBefore="2024-01-16T12:30:00+01:00")
    assert ids(data) == [leads[1]["id"], leads[0]["id"]]


async def test_metadata_equality_filters(api, tenant):
    a = await create_lead(
        api, tenant, metadata={"plan": "pro", "seats": 5, "trial": True, "tags": ["vip", "eu"]}
    )
    b = await create_lead(api, tenant, metadata={"plan": "free", "seats": "5", "trial": False})
    c = await create_lead(api, tenant, metadata={"plan": "pro", "seats": 5.0})
    ids = lambda data: {x["id"] for x in data["leads"]}  # noqa: E731
    assert ids(await listing(api, tenant, **{"metadata.plan": "pro"})) == {a["id"], c["id"]}
    assert ids(await listing(api, tenant, **{"metadata.seats": "5"})) == {a["id"], b["id"], c["id"]}
    assert ids(await listing(api, tenant, **{"metadata.trial": "true"})) == {a["id"]}
    assert ids(await listing(api, tenant, **{"metadata.tags": "vip"})) == {a["id"]}
    assert ids(
        await listing(api, tenant, **{"metadata.plan": "pro", "metadata.trial": "true"})
    ) == {a["id"]}
    assert ids(await listing(api, tenant, **{"metadata.nothing": "x"})) == set()


@pytest.mark.parametrize(
    "sort", ["createdAt", "-createdAt", "updatedAt", "-updatedAt", "name", "-name"]
)
async def test_sorts_are_total_and_cursor_pages_follow_them(api, tenant, sort):
    names = ["bob", "Alice", "carol", "alice", "Bob", "dave", "Éve"]
    leads = [await create_lead(api, tenant, name=n, email=f"{i}@x.io") for i, n in enumerate(names)]
    full = await listing(api, tenant, sort=sort, limit=100)
    order = [x["id"] for x in full["leads"]]
    assert sorted(order) == sorted(x["id"] for x in leads)
    if sort.endswith("name"):
        folded = [x["name"].casefold().replace("é", "e") for x in full["leads"]]
        assert folded == sorted(folded, reverse=sort.startswith("-"))
    paged, cursor = [], None
    while True:
        params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
        data = await listing(api, tenant, **params)
        paged += [x["id"] for x in data["leads"]]
        cursor = data["pagination"]["nextCursor"]
        if cursor is None:
            assert data["pagination"]["hasNext"] is False
            break
    assert paged == order


async def test_cursor_paging_has_no_gaps_or_duplicates_while_leads_arrive(api, tenant):
    existing = {x["id"] for x in await make(api, tenant, 15)}
    seen, cursor = [], None
    first = await listing(api, tenant, limit=4)
    seen += [x["id"] for x in first["leads"]]
    cursor = first["pagination"]["nextCursor"]
    while cursor:
        await asyncio.gather(*(create_lead(api, tenant) for _ in range(3)))
        data = await listing(api, tenant, limit=4, cursor=cursor)
        seen += [x["id"] for x in data["leads"]]
        cursor = data["pagination"]["nextCursor"]
    assert len(seen) == len(set(seen))
    assert set(seen) == existing


async def test_tampered_or_foreign_cursors_are_refused(api, tenant):
    await make(api, tenant, 3)
    cursor = (await listing(api, tenant, limit=1))["pagination"]["nextCursor"]
    body, sig = cursor.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (flipped + "." + sig, body + "." + sig[::-1], "garbage", cursor + "x", "a.b.c"):
        resp = await api.get(tenant.leads_url, params={"cursor": bad}, headers=tenant.headers)
        error = await error_of(resp, 400, "VALIDATION_ERROR")
        assert "cursor" in error["details"]
    resp = await api.get(
        tenant.leads_url, params={"cursor": cursor, "sort": "name"}, headers=tenant.headers
    )
    assert "cursor" in (await error_of(resp, 400, "VALIDATION_ERROR"))["details"]
    resp = await api.get(
        tenant.leads_url, params={"cursor": cursor, "page": 2}, headers=tenant.headers
    )
    assert "cursor" in (await error_of(resp, 400, "VALIDATION_ERROR"))["details"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "x"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page": "99999999999999999999"}, "page"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"status": "won"}, "status"),
        ({"status": "new,"}, "status"),
        ({"source": "x" * 65}, "source"),
        ({"search": ""}, "search"),
        ({"search": "   "}, "search"),
        ({"search": "x" * 201}, "search"),
        ({"email": "nope"}, "email"),
        ({"createdAfter": "yesterday"}, "createdAfter"),
        ({"createdAfter": "0001-01-01T00:00:00Z"}, "createdAfter"),
        ({"updatedAfter": "0001-01-01T00:00:00Z"}, "updatedAfter"),
        ({"createdBefore": "0001-01-01T00:00:00Z"}, "createdBefore"),
        ({"updatedBefore": "9999-12-31T23:59:59.999Z"}, "updatedBefore"),
        ({"createdAfter": "1899-12-31T23:59:59+00:00"}, "createdAfter"),
        ({"updatedBefore": "2024-13-01T00:00:00Z"}, "updatedBefore"),
        (
            {"createdAfter": "2024-02-01T00:00:00Z", "createdBefore": "2024-01-01T00:00:00Z"},
            "createdBefore",
        ),
        ({"sort": "email"}, "sort"),
        ({"sort": "--name"}, "sort"),
        ({"bogus": "1"}, "bogus"),
        ({"metadata.": "x"}, "metadata."),
        ({"metadata.$where": "1"}, "metadata.$where"),
        ({"metadata.a.b": "1"}, "metadata.a.b"),
    ],
)
async def test_bad_list_parameters_are_named(api, tenant, params, named):
    resp = await api.get(tenant.leads_url, params=params, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert named in error["details"], error


async def test_repeated_parameters_are_refused(api, tenant):
    resp = await api.get(tenant.leads_url + "?status=new&status=lost", headers=tenant.headers)
    assert "status" in (await error_of(resp, 400, "VALIDATION_ERROR"))["details"]


NAMES = ["bob", "Alice", "carol", "alice", "Bob", "dave", "Éve", "Zoë", "李雷", "Ōta", "0liver"]


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "createdAt"},
        {"sort": "updatedAt"},
        {"sort": "name"},
        {"sort": "-name"},
        {"sort": "-updatedAt"},
        {"status": "new,lost", "source": "web,ads"},
        {"status": "new,lost", "source": "web,ads", "sort": "createdAt"},
        {"source": "ads,partner"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
async def test_windowed_lists_page_like_one_plain_read(api, tenant, monkeypatch, params):
    """Pages read in windows (on SecantusDB: oldest first and by name from the chatbot's
    bounds kept with its counters, several statuses with several sources one pair at a
    time), started far too narrow, are the very pages of one read of every lead: same
    order, ties by id, cursor pages continuing where the last ended; also after renames
    below the lowest name and above the highest, and updates."""
    leads = []
    for i in range(36):
        leads.append(
            await create_lead(
                api,
                tenant,
                name=NAMES[i % len(NAMES)],
                email=f"w{i}@x.io",
                status=["new", "lost", "contacted"][i % 3],
                source=["web", "ads", "partner"][i // 3 % 3],
            )
        )
    changes = [
        (leads[3], {"name": "Aaron"}),
        (leads[4], {"name": "zzz top"}),
        (leads[5], {"name": "Mid"}),
        (leads[6], {"status": "lost", "source": "ads"}),
        (leads[7], {"source": None}),
        (leads[9], {"status": "new"}),
    ]
    for lead, change in changes:
        resp = await api.put(tenant.lead_url(lead["id"]), json=change, headers=tenant.headers)
        await data_of(resp)
    resp = await api.delete(
        tenant.lead_url(leads[8]["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    full = await listing(api, tenant, limit=100, **params)  # few leads: one read
    order = [x["id"] for x in full["leads"]]
    sort = params.get("sort", "-createdAt")
    field = {"name": "name"}.get(sort.lstrip("-"), sort.lstrip("-"))
    key = (
        (lambda x: (fold(x["name"]), x["id"]))
        if field == "name"
        else (lambda x: (x[field], x["id"]))
    )
    assert order == [x["id"] for x in sorted(full["leads"], key=key, reverse=sort.startswith("-"))]
    # The total (from the counters where there is no filter but status and source).
    assert len(order) == full["pagination"]["total"] > 8

    monkeypatch.setattr(paging, "FULL_READ_MAX", 0)
    monkeypatch.setattr(paging, "WINDOW_SLACK", 1)
    monkeypatch.setattr(paging, "TIES_READ", 1)
    monkeypatch.setattr(plans, "DEFAULT_SPAN", timedelta(milliseconds=5))
    monkeypatch.setattr(plans, "LETTERS_SPAN", positions.STRING_BASE**4)
    for limit in (1, 3, 7):
        by_page = []
        for page in range(1, 40):
            data = await listing(api, tenant, page=page, limit=limit, **params)
            assert data["pagination"]["total"] == len(order)
            by_page += [x["id"] for x in data["leads"]]
            if not data["pagination"]["hasNext"]:
                break
        assert by_page == order, limit
        by_cursor, cursor = [], None
        while True:
            data = await listing(
                api, tenant, limit=limit, **params, **({"cursor": cursor} if cursor else {})
            )
            by_cursor += [x["id"] for x in data["leads"]]
            cursor = data["pagination"]["nextCursor"]
            if cursor is None:
                break
        assert by_cursor == order, limit


@pytest.mark.parametrize("sort", ["name", "-name"])
async def test_a_name_page_starts_where_the_last_one_did_and_still_sees_a_new_first(
    api, tenant, monkeypatch, sort
):
    """A first page by name starts its windows at a few characters of the first name the
    last first page found (the counters keep only a name's class); a lead made since with
    a name before it, or one renamed past it, is still where the sort puts it."""
    monkeypatch.setattr(paging, "FULL_READ_MAX", 0)  # windows even for a few leads
    made = [
        await create_lead(api, tenant, name=name, email=f"n{i}@x.io")
        for i, name in enumerate(["Mary", "Mike", "Mona", "Nick", "Nora", "Otto"])
    ]

    async def first_names() -> list[str]:
        data = await listing(api, tenant, sort=sort, limit=3)
        return [x["name"] for x in data["leads"]]

    expected = ["Mary", "Mike", "Mona"] if sort == "name" else ["Otto", "Nora", "Nick"]
    assert await first_names() == expected
    assert await first_names() == expected  # from the remembered start
    newcomer = "Aaron" if sort == "name" else "Zed"
    await create_lead(api, tenant, name=newcomer, email="new@x.io")
    assert await first_names() == [newcomer, *expected[:2]]
    moved = made[0] if sort == "name" else made[-1]  # the old first goes to the far end
    resp = await api.put(
        tenant.lead_url(moved["id"]),
        json={"name": "Zz" if sort == "name" else "Aa"},
        headers=tenant.headers,
    )
    await data_of(resp)
    assert await first_names() == [newcomer, *expected[1:3]]
