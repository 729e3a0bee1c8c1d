"""Datadog's API as the official datadog-api-client reaches it: a Datadog key pair and a client
on the live server.
"""

from __future__ import annotations

from typing import Any

from datadog_api_client import ApiClient, Configuration

from support.harness import Harness, LiveServer


async def datadog_key(
    h: Harness, org: str, scopes: list[str], key: str | None = None, **fields: Any
):
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": "datadog", "scopes": scopes, "kind": "datadog", **fields},
        headers=h.auth(key),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["api_key"], body["application_key"]


def dd(live: LiveServer, keys: tuple[str, str] | None, **options: Any) -> ApiClient:
    configuration = Configuration(host=f"{live.url}/datadog", **options)
    if keys is not None:
        configuration.api_key["apiKeyAuth"], configuration.api_key["appKeyAuth"] = keys
    return ApiClient(configuration)
