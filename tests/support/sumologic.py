"""Sumo Logic's API as its clients reach it: keys, the real sumologic-sdk on the live server, the
global assembly's header and the error envelope.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import requests
from sumologic import SumoLogic

from support.harness import Harness, LiveServer

BASE = "/sumologic/api"
HEADERS = {"parentDeploymentId": "us1"}
_ERROR_ID = re.compile(r"^[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}$")


async def sumo_key(h: Harness, org: str, scopes: list[str]) -> tuple[str, str]:
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": "sumo", "scopes": scopes, "kind": "sumologic"},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["access_id"], body["access_key"]


async def sdk(h: Harness, live: LiveServer, org: str, scopes: list[str]) -> SumoLogic:
    access_id, access_key = await sumo_key(h, org, scopes)
    return SumoLogic(access_id, access_key, endpoint=f"{live.url}{BASE}")


def basic(access_id: str, access_key: str) -> httpx.BasicAuth:
    return httpx.BasicAuth(access_id, access_key)


def sumo_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Sumo Logic's envelope: {"id": "XXXXX-XXXXX-XXXXX", "errors": [{"code", "message"}]}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert _ERROR_ID.match(body["id"]), body
    assert body["errors"] and all(e["code"] == code for e in body["errors"]), body
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])
    return body


async def raises(live: LiveServer, status: int, fn: Any, *args: Any, **kwargs: Any) -> str:
    """The SDK call fails as against Sumo Logic: requests.HTTPError with the status; returns the
    error body the SDK puts in the exception's reason."""
    with pytest.raises(requests.HTTPError) as caught:
        await live.call(fn, *args, **kwargs)
    assert caught.value.response is not None
    assert caught.value.response.status_code == status
    return str(caught.value.response.reason)
