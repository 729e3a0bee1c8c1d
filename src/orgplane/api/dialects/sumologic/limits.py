"""Sumo Logic's own limits on top of orgplane's: 4 requests per second and 10 concurrent
requests per access key, checked right after authentication; a refusal is a 429 with
``Retry-After``.

The rate counter lives where the limiter keeps its counters (memory, or Redis with several
workers). The concurrency counter is in this process's memory: with N workers, a key may have up
to 10 requests in flight in each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request

from orgplane.api.deps import ServicesDep, provide_principal
from orgplane.core.access.principal import Principal
from orgplane.core.errors import RateLimited

RATE = "4/second"
MAX_CONCURRENT = 10
_in_flight: Counter[str] = Counter()


def in_flight(key_id: str) -> int:
    return _in_flight[key_id]


async def provide_sumo_principal(
    request: Request[Any, Any, Any], services: ServicesDep
) -> AsyncGenerator[Principal, None]:
    """The authenticated principal (401/429 as everywhere), then Sumo Logic's limits, held for
    the whole request: the concurrency slot is given back once the response is sent."""
    principal = await provide_principal(request, services)
    verdict = await services.limiter.check_extra("sumologic", RATE, principal.key_id)
    if not verdict.allowed:
        services.metrics.rate_limited.labels("sumologic").inc()
        raise RateLimited(
            f"rate limit of {verdict.limit} requests per second per access key exceeded; "
            f"retry in {max(1, verdict.reset_after)} s",
            headers=verdict.headers(),
        )
    if _in_flight[principal.key_id] >= MAX_CONCURRENT:
        services.metrics.rate_limited.labels("sumologic-concurrency").inc()
        raise RateLimited(
            f"at most {MAX_CONCURRENT} concurrent requests per access key; retry in 1 s",
            headers={"Retry-After": "1"},
        )
    _in_flight[principal.key_id] += 1
    try:
        yield principal
    finally:
        _in_flight[principal.key_id] -= 1
        if _in_flight[principal.key_id] <= 0:
            del _in_flight[principal.key_id]
