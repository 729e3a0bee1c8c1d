"""Idempotency-Key on the native API: a write runs once per (credential, key), and a retry
gets the first response back (``Idempotent-Replayed: true``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from orgplane.api.deps import Services
from orgplane.core import idempotency
from orgplane.core.access.principal import Principal
from orgplane.db.engine import Tx

T = TypeVar("T")


async def run_once(
    request: Request[Any, Any, Any],
    services: Services,
    principal: Principal,
    key: str | None,
    command: Callable[[Tx], Awaitable[T]],
    render: Callable[[T, Principal], Response[Any]],
) -> Response[Any]:
    """Run ``command`` in a transaction (or its group, when it declares one) and render its
    result; with an Idempotency-Key, in the same transaction as the key's claim, once: a
    repeated key replays the first response and runs nothing."""
    if key is None:
        return render(await services.db.transaction(command), principal)
    key = idempotency.check_key(key)
    fp = idempotency.fingerprint(request.method, request.url.path, await request.body())
    ttl = services.settings.idempotency_ttl_hours

    async def once(tx: Tx) -> Response[Any]:
        stored = await idempotency.claim(tx, principal.key_id, key, fp, ttl)
        if stored is not None:
            return _replay(stored)
        response = render(await command(tx), principal)
        if response.status_code is None:
            raise AssertionError("a replayed response needs its status code")
        body = msgspec.json.encode(response.content)
        await idempotency.complete(
            tx, principal.key_id, key, response.status_code, body, dict(response.headers)
        )
        return response

    return await services.db.transaction(once)


def _replay(stored: idempotency.StoredResponse) -> Response[Any]:
    return Response(
        stored.body,
        status_code=stored.status_code,
        media_type="application/json",
        headers={**stored.headers, "Idempotent-Replayed": "true"},
    )
