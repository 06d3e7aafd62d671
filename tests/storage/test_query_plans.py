"""Every list query shape the repository builds is answered from an index.

The plans are the server's own (explain), for the exact find the repository runs.
"""

from datetime import UTC, datetime

import pytest

from pollybot_leads.domain.queries import SORTS, CursorPosition, LeadQuery

T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = datetime(2025, 1, 1, tzinfo=UTC)

FILTERS = {
    "none": {},
    "status": {"statuses": ("new",)},
    "statuses": {"statuses": ("new", "lost")},
    "source": {"sources": ("web",)},
    "sources": {"sources": ("web", "ads")},
    "email": {"email": "a@b.co"},
    "created": {"created_after": T1, "created_before": T2},
    "updated": {"updated_after": T1},
    "metadata": {"metadata": (("plan", ("pro",)),)},
    "metadata_number": {"metadata": (("seats", ("5", 5)),)},
    "search": {"words": ("jo",)},
    "search_two": {"words": ("jo", "example")},
    "search_long": {"words": ("wolfeschlegelsteinhausen",)},
    "search_long_two": {"words": ("wolfeschlegelsteinhausen", "jo")},
    "metadata_two": {"metadata": (("plan", ("pro",)), ("seats", ("5", 5)))},
    "status_and_source": {"statuses": ("new",), "sources": ("web",)},
    "email_and_status": {"email": "a@b.co", "statuses": ("new",)},
    "page_500": {"page": 500},
    "everything": {
        "statuses": ("new", "lost"),
        "sources": ("web",),
        "created_after": T1,
        "updated_before": T2,
        "metadata": (("plan", ("pro",)),),
        "words": ("jo",),
    },
}


def stages(plan) -> list[str]:
    """Every stage name anywhere in an explain document (classic or SBE layout)."""
    found = []
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key == "stage" and isinstance(value, str):
                found.append(value)
            else:
                found += stages(value)
    elif isinstance(plan, list):
        for item in plan:
            found += stages(item)
    return found


def cursor_for(sort: str) -> CursorPosition:
    field = SORTS[sort][0]
    value = "m" if field == "nameSort" else T1
    return CursorPosition(sort, value, "lead_0123456789abcdef")


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize(
    "shape", [*FILTERS, "cursor", "cursor_with_filters", "cursor_with_statuses"]
)
async def test_list_query_uses_an_index_and_never_scans(leads_repo, tenant, sort, shape):
    if shape == "cursor":
        query = LeadQuery(sort=sort, after=cursor_for(sort))
    elif shape == "cursor_with_statuses":
        query = LeadQuery(sort=sort, after=cursor_for(sort), **FILTERS["statuses"])
    elif shape == "cursor_with_filters":
        query = LeadQuery(sort=sort, after=cursor_for(sort), **FILTERS["everything"])
    else:
        query = LeadQuery(sort=sort, **FILTERS[shape])
    plans = await leads_repo.explain_list(chatbot_id=tenant.chatbot_id, query=query)
    assert plans
    for plan in plans:
        names = stages(plan["queryPlanner"])
        assert "IXSCAN" in names, names
        assert "COLLSCAN" not in names, names
