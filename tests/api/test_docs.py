"""The published OpenAPI document is valid, complete, and describes real responses; the
documentation page is current, safe and served offline."""

import hashlib
import re
from pathlib import Path

import pytest
from aiohttp import web
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

import pollybot_leads
from pollybot_leads.errors import ValidationFailed
from pollybot_leads.http.docs import STATIC_DIR
from pollybot_leads.http.openapi import build_spec
from pollybot_leads.http.spec import Link, Operation, Response

from .helpers import create_lead

LEAD_OPERATION_IDS = {
    "createLead",
    "createLeadsBatch",
    "listLeads",
    "getLead",
    "updateLead",
    "deleteLead",
    "exportLeads",
    "listLeadDuplicates",
    "mergeLeads",
}
WEBHOOK_OPERATION_IDS = {
    "createWebhook",
    "listWebhooks",
    "getWebhook",
    "updateWebhook",
    "deleteWebhook",
    "rotateWebhookSecret",
    "listWebhookDeliveries",
    "replayWebhook",
}
PRIVACY_OPERATION_IDS = {"createErasure", "listSuppressions", "deleteSuppression"}
ADMIN_OPERATION_IDS = {
    "adminCreateWorkspace",
    "adminListWorkspaces",
    "adminGetWorkspace",
    "adminDeleteWorkspace",
    "adminCreateChatbot",
    "adminListChatbots",
    "adminGetChatbot",
    "adminUpdateChatbot",
    "adminDeleteChatbot",
    "adminCreateKey",
    "adminListKeys",
    "adminUpdateKey",
    "adminRevokeKey",
    "adminRollKey",
    "adminListAudit",
}
OPERATION_IDS = (
    LEAD_OPERATION_IDS
    | WEBHOOK_OPERATION_IDS
    | PRIVACY_OPERATION_IDS
    | ADMIN_OPERATION_IDS
    | {"listEvents"}
)
# Responses that are a file rather than the JSON envelope: their media types.
FILES = {("exportLeads", "200"): {"application/x-ndjson", "text/csv"}}

OPERATIONS = {
    ("post", "/api/v1/chatbots/{chatbotId}/leads"),
    ("post", "/api/v1/chatbots/{chatbotId}/leads/batch"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
    ("put", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
    ("delete", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads/export"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads/{leadId}/duplicates"),
    ("post", "/api/v1/chatbots/{chatbotId}/leads/{leadId}/merge"),
    ("get", "/api/v1/chatbots/{chatbotId}/events"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{webhookId}"),
    ("put", "/api/v1/webhooks/{webhookId}"),
    ("delete", "/api/v1/webhooks/{webhookId}"),
    ("post", "/api/v1/webhooks/{webhookId}/rotate-secret"),
    ("get", "/api/v1/webhooks/{webhookId}/deliveries"),
    ("post", "/api/v1/webhooks/{webhookId}/replay"),
    ("post", "/api/v1/privacy/erasures"),
    ("get", "/api/v1/privacy/suppressions"),
    ("delete", "/api/v1/privacy/suppressions/{suppressionId}"),
    ("post", "/api/v1/admin/workspaces"),
    ("get", "/api/v1/admin/workspaces"),
    ("get", "/api/v1/admin/workspaces/{workspaceId}"),
    ("delete", "/api/v1/admin/workspaces/{workspaceId}"),
    ("post", "/api/v1/admin/workspaces/{workspaceId}/chatbots"),
    ("get", "/api/v1/admin/workspaces/{workspaceId}/chatbots"),
    ("get", "/api/v1/admin/chatbots/{chatbotId}"),
    ("patch", "/api/v1/admin/chatbots/{chatbotId}"),
    ("delete", "/api/v1/admin/chatbots/{chatbotId}"),
    ("post", "/api/v1/admin/workspaces/{workspaceId}/keys"),
    ("get", "/api/v1/admin/workspaces/{workspaceId}/keys"),
    ("patch", "/api/v1/admin/keys/{keyId}"),
    ("delete", "/api/v1/admin/keys/{keyId}"),
    ("post", "/api/v1/admin/keys/{keyId}/roll"),
    ("get", "/api/v1/admin/audit"),
}


@pytest.fixture(scope="module")
async def spec(api):
    resp = await api.get("/api/docs/openapi.json")
    assert resp.status == 200
    return await resp.json()


async def test_spec_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.0")
    validate(spec)


async def test_every_operation_is_documented_completely(spec):
    found = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert found == OPERATIONS
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["description"]
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path))
            assert all("schema" in p for p in op["parameters"])
            assert not any(p["in"] == "body" for p in op["parameters"])
            for status, response in op["responses"].items():
                if status == "304":  # no body
                    assert "content" not in response and "ETag" in response["headers"]
                    continue
                assert response["headers"]["X-Request-Id"]["required"] is True
                files = FILES.get((op["operationId"], status))
                if files:
                    assert set(response["content"]) == files
                    assert all(m["schema"] and m["example"] for m in response["content"].values())
                    continue
                media = response["content"]["application/json"]
                assert "schema" in media
                if int(status) >= 400:
                    assert media["examples"], (method, path, status)
                    for example in media["examples"].values():
                        assert example["value"]["success"] is False
            assert {"400", "401", "429", "503"} <= set(op["responses"])
            if "{" in path:  # a chatbot, lead or endpoint that may not exist
                assert "404" in op["responses"]
            if "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]
                assert body["schema"]["$ref"].startswith("#/components/schemas/")
                if "Idempotency-Key" in {p["name"] for p in op["parameters"]}:
                    assert {"409", "422"} <= set(op["responses"])
                assert body["example"]
                assert {"400", "413", "415"} <= set(op["responses"])
            else:
                assert method in ("get", "delete") or path.endswith("/rotate-secret")
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearerAuth": []}]
    list_params = {
        p["name"] for p in spec["paths"]["/api/v1/chatbots/{chatbotId}/leads"]["get"]["parameters"]
    }
    assert {
        "page",
        "limit",
        "status",
        "source",
        "search",
        "email",
        "createdAfter",
        "createdBefore",
        "updatedAfter",
        "updatedBefore",
        "sort",
        "cursor",
    } <= list_params


def _validator(spec, path, method, status):
    schema = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"][
        "schema"
    ]
    resolver_doc = {"components": spec["components"], **schema}
    return OAS30Validator(resolver_doc)  # understands OpenAPI's nullable


async def test_real_responses_match_the_documented_schemas(api, tenant, spec):
    lead = await create_lead(api, tenant, phone="+1 555", metadata={"a": [1]})
    base = "/api/v1/chatbots/{chatbotId}/leads"
    checks = [
        (
            await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers),
            base + "/{leadId}",
            "get",
            200,
        ),
        (await api.get(tenant.leads_url, headers=tenant.headers), base, "get", 200),
        (
            await api.put(
                tenant.lead_url(lead["id"]), json={"status": "lost"}, headers=tenant.headers
            ),
            base + "/{leadId}",
            "put",
            200,
        ),
        (await api.post(tenant.leads_url, json={}, headers=tenant.headers), base, "post", 400),
        (await api.get(tenant.leads_url), base, "get", 401),
        (
            await api.delete(
                tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
            ),
            base + "/{leadId}",
            "delete",
            200,
        ),
    ]
    for resp, path, method, status in checks:
        assert resp.status == status
        body = await resp.json()
        errors = list(_validator(spec, path, method, status).iter_errors(body))
        assert errors == [], (path, method, status, errors[:1])


async def test_swagger_ui_is_served_without_a_cdn(api):
    resp = await api.get("/api/docs")
    assert resp.status == 200
    html = await resp.text()
    assert "swagger-ui" in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/api/docs/static/") for a in assets)
    for asset in assets:
        got = await api.get(asset)
        assert got.status == 200, asset
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    script = await (await api.get("/api/docs/static/docs/docs.js")).text()
    assert 'url: "/api/docs/openapi.json"' in script
    assert "queryConfigEnabled: false" in script  # ?url= and ?configUrl= are ignored
    assert "configUrl:" not in script and "urls:" not in script


async def test_docs_page_forbids_framing_inline_scripts_and_foreign_sources(api):
    resp = await api.get("/api/docs", params={"url": "https://evil.example/spec.json"})
    assert resp.status == 200
    html = await resp.text()
    assert "evil.example" not in html
    assert "<script>" not in html  # the configuration is a file, so CSP can forbid inline
    csp = dict(
        part.strip().split(" ", 1) for part in resp.headers["Content-Security-Policy"].split(";")
    )
    assert csp["frame-ancestors"] == "'none'"
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert csp["style-src"] == "'self'"  # no inline styles or scripts at all
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_head_on_the_docs_and_the_root_redirect(api):
    resp = await api.head("/api/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    for method in ("GET", "HEAD"):
        resp = await api.request(method, "/", allow_redirects=False)
        assert resp.status in (302, 307)
        assert resp.headers["Location"] == "/api/docs"
    resp = await api.get("/")
    assert resp.status == 200 and str(resp.url).endswith("/api/docs")


async def test_spec_stays_valid_after_the_docs_page_is_viewed(api):
    before = await (await api.get("/api/docs/openapi.json")).json()
    for path in ("/api/docs", "/api/docs?url=/x.json", "/api/docs/static/docs/docs.js"):
        assert (await api.get(path)).status == 200
    after = await (await api.get("/api/docs/openapi.json")).json()
    assert after == before
    assert set(after) == {"openapi", "info", "paths", "components", "security", "servers", "tags"}
    validate(after)


async def test_operations_have_ids_tags_and_links(spec):
    ops = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    assert set(ops) == OPERATION_IDS
    assert [t["name"] for t in spec["tags"]] == ["leads", "events", "webhooks", "privacy", "admin"]
    assert all(t["description"] for t in spec["tags"])
    assert all(ops[o]["tags"] == ["leads"] for o in LEAD_OPERATION_IDS)
    assert all(ops[o]["tags"] == ["webhooks"] for o in WEBHOOK_OPERATION_IDS)
    assert all(ops[o]["tags"] == ["privacy"] for o in PRIVACY_OPERATION_IDS)
    assert all(ops[o]["tags"] == ["admin"] for o in ADMIN_OPERATION_IDS)
    assert ops["listEvents"]["tags"] == ["events"]
    hooks = ops["createWebhook"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in hooks.values()} == WEBHOOK_OPERATION_IDS - {
        "createWebhook",
        "listWebhooks",
    }
    assert hooks["getWebhook"]["parameters"] == {"webhookId": "$response.body#/data/id"}
    links = ops["createLead"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getLead",
        "updateLead",
        "deleteLead",
    }
    assert links["getLead"]["parameters"]["leadId"] == "$response.body#/data/id"
    confirm = [p for p in ops["deleteLead"]["parameters"] if p["name"] == "confirm"]
    assert confirm[0]["required"] is True and confirm[0]["schema"]["enum"] == ["true"]
    assert "X-Confirm-Delete" in ops["deleteLead"]["description"]
    assert "metadata.<key>" in ops["listLeads"]["description"]
    assert spec["components"]["schemas"]["LeadUpdate"]["minProperties"] == 1
    assert spec["info"]["license"]["name"] == "Apache-2.0"
    assert spec["info"]["version"] == pollybot_leads.__version__


def _response_schemas(spec):
    """Every object schema reachable from a response, by name."""
    schemas = spec["components"]["schemas"]
    names, todo = set(), []
    for item in spec["paths"].values():
        for op in item.values():
            for response in op["responses"].values():
                if "content" in response:  # a 304 has none
                    todo.extend(media["schema"] for media in response["content"].values())
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.rsplit("/", 1)[-1]
                if name not in names:
                    names.add(name)
                    todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return {name: schemas[name] for name in names}


async def test_response_fields_are_required_and_described(spec):
    optional = {
        ("Pagination", "totalExact"),
        ("Error", "details"),
        ("BatchItemError", "details"),
        ("BatchResult", "lead"),  # one of lead and error, by status
        ("BatchResult", "error"),
        ("EventData", "changes"),  # lead.updated and lead.merged only
        ("EventData", "redacted"),  # a deleted lead's earlier events only
        ("EventData", "reason"),  # lead.deleted by an erasure or a merge only
        ("EventData", "mergedIds"),  # lead.merged only
    }
    found = _response_schemas(spec)
    assert {"LeadEnvelope", "Lead", "StatusChange", "Pagination", "ErrorEnvelope"} <= set(found)
    for name, schema in found.items():
        for field, prop in schema["properties"].items():
            assert prop.get("description"), (name, field)
            if (name, field) not in optional:
                assert field in schema.get("required", []), (name, field)


async def test_vendored_swagger_ui_is_the_pinned_release():
    root = Path(STATIC_DIR) / "swagger-ui"
    sums = (root / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 6
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    bundle = (root / "swagger-ui-bundle.js").read_text()
    assert re.search(r'DOMPurify\.version="3\.4\.\d+"', bundle)


# --- what the document says is what the server does -----------------------------------


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"confirm": "true"}, {}, 200),
        ({}, {"X-Confirm-Delete": "TRUE"}, 200),
        ({"confirm": "true"}, {"X-Confirm-Delete": "true"}, 200),
        ({"confirm": "false"}, {"X-Confirm-Delete": "true"}, 400),
        ({"confirm": "true"}, {"X-Confirm-Delete": "%S"}, 400),
        ({}, {"X-Confirm-Delete": ""}, 400),
        ({}, {}, 400),
    ],
)
async def test_delete_accepts_exactly_the_documented_confirmations(
    api, tenant, params, headers, status
):
    lead = await create_lead(api, tenant)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params=params, headers={**tenant.headers, **headers}
    )
    assert resp.status == status, await resp.text()
    if status == 400:
        assert (await resp.json())["error"]["code"] == "CONFIRMATION_REQUIRED"
        assert (await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)).status == 200


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"search": "jo\u0000"}, "search"),
        ({"search": "!!! ???"}, "search"),
        ({"source": "web\tsite"}, "source"),
        ({"source": "web,,ads"}, "source"),
        ({"source": "s" * 65}, "source"),
        ({"status": "new,won"}, "status"),
        ({"email": "a\u0001@b.co"}, "email"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"page": "2", "cursor": "abc.def"}, "cursor"),
    ],
)
async def test_list_parameters_follow_the_documented_patterns(api, tenant, params, named):
    resp = await api.get(tenant.leads_url, params=params, headers=tenant.headers)
    assert resp.status == 400, await resp.text()
    assert named in (await resp.json())["error"]["details"]


async def test_list_values_the_patterns_allow_are_accepted(api, tenant):
    lead = await create_lead(api, tenant, source="web site", status="contacted")
    params = {"status": " contacted , new", "source": "ads, web site ", "search": "  john  "}
    resp = await api.get(tenant.leads_url, params=params, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    assert [x["id"] for x in (await resp.json())["data"]["leads"]] == [lead["id"]]


async def test_every_app_gets_the_same_complete_document(settings, spec):
    from pollybot_leads.app import create_app
    from pollybot_leads.http.openapi import spec_key

    # The decorators' data lives on the shared handler functions: a second app (as the
    # tests and scripts build) must not get a document without request bodies.
    again = [create_app(settings)[spec_key] for _ in range(2)]
    assert again[0] == again[1] == spec
    assert {"LeadCreate", "LeadUpdate"} <= set(spec["components"]["schemas"])


# --- a declaration with a fact missing is refused at start-up --------------------------


def _declare(**facts):
    """A handler for GET /api/v1/things/{chatbotId}, declared with these facts."""
    declared = {
        "operation_id": "getThing",
        "scope": "leads:read",
        "tag": "leads",
        "summary": "Get a thing",
        "description": "A thing.",
        "responses": {200: Response("The thing")},
        "errors": (ValidationFailed,),
        **facts,
    }

    async def handler(request):
        raise AssertionError("never called")

    return Operation(**declared)(handler)


@pytest.mark.parametrize(
    ("path", "facts", "refusal"),
    [
        ("/api/v1/things/{chatbotId}", None, "has no @Operation"),
        ("/api/v1/things/{thingId}", {}, "path parameter 'thingId'"),
        ("/api/v1/things/{chatbotId}", {"tag": "things"}, "tag 'things'"),
        (
            "/api/v1/things/{chatbotId}",
            {"responses": {200: Response("The thing", links=(Link("getOther", "?", {}),))}},
            "links to unknown getOther",
        ),
        (
            "/api/v1/things/{chatbotId}",
            {"responses": {200: Response("The thing", links=(Link("getThing", "?", {"x": "1"}),))}},
            "links to getThing with {'x'}",
        ),
        ("/api/v1/things/{chatbotId}", {"error_descriptions": {404: "?"}}, "for no error"),
    ],
)
def test_the_builder_refuses_a_missing_fact(path, facts, refusal):
    app = web.Application()
    if facts is None:

        async def undeclared(request):
            raise AssertionError("never called")

        app.router.add_get(path, undeclared, allow_head=False)
    else:
        app.router.add_get(path, _declare(**facts), allow_head=False)
    with pytest.raises((LookupError, ValueError), match=re.escape(refusal)):
        build_spec(app)


def test_the_declaration_is_all_the_builder_needs():
    app = web.Application()
    app.router.add_get("/api/v1/things/{chatbotId}", _declare(), allow_head=False)
    document = build_spec(app)
    validate(document)
    op = document["paths"]["/api/v1/things/{chatbotId}"]["get"]
    assert set(op["responses"]) == {"200", "400"}  # the error's status comes from its class
    assert set(op["responses"]["400"]["content"]["application/json"]["examples"]) == {
        "VALIDATION_ERROR"
    }
