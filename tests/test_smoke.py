from __future__ import annotations

from support.harness import Harness


async def test_root_is_readable_with_the_bootstrap_key(h: Harness) -> None:
    response = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())
    assert response.status_code == 200
    assert response.json()["name"] == "Root"
    assert response.headers["etag"]


async def test_docs_load_their_assets_from_the_installation(h: Harness) -> None:
    """/docs works without internet: the page names only local assets, each served here."""
    page = await h.client.get("/docs/")
    assert page.status_code == 200, page.text
    assert "cdn." not in page.text and "http" not in page.text.split("<body")[0].lower()
    for asset, marker in (
        ("swagger-ui-bundle.js", b"SwaggerUIBundle"),
        ("swagger-ui-standalone-preset.js", b"SwaggerUIStandalonePreset"),
        ("swagger-ui.css", b".swagger-ui"),
    ):
        assert f"/docs/assets/{asset}" in page.text
        response = await h.client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and marker in response.content, asset
