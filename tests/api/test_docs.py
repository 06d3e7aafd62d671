"""The published OpenAPI document is valid, complete, and describes real responses."""

import re

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from .helpers import create_lead

OPERATIONS = {
    ("post", "/api/v1/chatbots/{chatbotId}/leads"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads"),
    ("get", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
    ("put", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
    ("delete", "/api/v1/chatbots/{chatbotId}/leads/{leadId}"),
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
                media = response["content"]["application/json"]
                assert "schema" in media
                if int(status) >= 400:
                    assert media["example"]["success"] is False
            assert {"401", "404", "429"} <= set(op["responses"])
            if method in ("post", "put"):
                body = op["requestBody"]["content"]["application/json"]
                assert body["schema"]["$ref"].startswith("#/components/schemas/Lead")
                assert body["example"]
                assert {"400", "413", "415"} <= set(op["responses"])
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
    assert "swagger-ui" in html and "/api/docs/openapi.json" in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/api/docs/static/") for a in assets)
    for asset in assets:
        assert (await api.get(asset)).status == 200, asset
