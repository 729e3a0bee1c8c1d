async def test_root_is_readable_with_the_bootstrap_key(h):
    response = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())
    assert response.status_code == 200
    assert response.json()["name"] == "Root"
    assert response.headers["etag"]
