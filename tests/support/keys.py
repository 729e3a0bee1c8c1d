"""Keys made through the native API for tests that drive the other surfaces."""

from __future__ import annotations

from typing import Any

from support.harness import Harness


async def dialect_key(
    h: Harness, org: str, kind: str, scopes: list[str] | None = None
) -> dict[str, Any]:
    """A key of ``kind`` (``make``, ``sumologic``, ``datadog``) for ``org``, made by the root's
    key, with ``scopes`` (all by default): the response, secrets in the vendor's words."""
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": kind, "scopes": scopes or ["*"], "kind": kind},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
