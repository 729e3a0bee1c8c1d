"""Make's MMS API as its TypeScript SDK reaches it: ``Token`` keys and headers, an org's
internal key, and Make's error body.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.models import orgs
from support.harness import Harness

BASE = "/make/api/v2"
SDK_HEADERS = {"Content-Type": "application/json", "User-Agent": "Make TypeScript SDK"}


def token(secret: str) -> dict[str, str]:
    return {**SDK_HEADERS, "Authorization": f"Token {secret}"}


async def make_key(h: Harness, org: str, scopes: list[str], key: str | None = None) -> str:
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": "make", "scopes": scopes, "kind": "make"},
        headers=h.auth(key),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "make"
    assert body["token"] == body["api_key"]
    assert str(uuid.UUID(body["token"], version=4)) == body["token"]
    secret: str = body["token"]
    return secret


async def org_key(h: Harness, public_id: str) -> int:
    async with h.services.db.read() as conn:
        key = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == public_id))
        ).scalar()
    assert isinstance(key, int)
    return key


def make_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["message"], str) and body["message"]
    return body
