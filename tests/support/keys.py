"""Keys made through the native API for tests that drive the other surfaces."""

from __future__ import annotations

import base64
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


async def surface_headers(h: Harness, org: str) -> dict[str, dict[str, str]]:
    """Headers, by surface, that make keys of ``org`` with every scope the caller: a native
    key (for the native API and SCIM), and a key of each vendor's kind."""
    native = await h.create_key(org, ["*"])
    datadog = await dialect_key(h, org, "datadog")
    make = await dialect_key(h, org, "make")
    sumo = await dialect_key(h, org, "sumologic")
    basic = base64.b64encode(f"{sumo['access_id']}:{sumo['access_key']}".encode()).decode()
    return {
        "native": h.auth(native),
        "scim": h.auth(native),
        "datadog": {
            "DD-API-KEY": datadog["api_key"],
            "DD-APPLICATION-KEY": datadog["application_key"],
        },
        "make": {"Authorization": f"Token {make['token']}"},
        "sumologic": {"Authorization": f"Basic {basic}", "parentDeploymentId": "us1"},
    }
