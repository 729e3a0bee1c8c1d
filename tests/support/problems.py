"""RFC 9457 problem documents, as the native API answers errors."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


def problem(
    response: httpx.Response, status: int, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with ``status`` (naming ``field``, of type ``code``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    if code is not None:
        assert body["type"] == f"https://orgplane.dev/problems/{code}", body
    return body
