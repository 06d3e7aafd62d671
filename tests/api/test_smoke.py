async def test_create_then_get(api, tenant):
    resp = await api.post(tenant.leads_url, json={"name": "John Doe", "email": "j@example.com"},
                          headers=tenant.headers)
    body = await resp.json()
    assert resp.status == 201, body
    lead = body["data"]
    resp = await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)
    assert resp.status == 200
    assert (await resp.json())["data"] == lead
