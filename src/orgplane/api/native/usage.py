"""Usage ingestion: batches of metered events, stored once per idempotency key."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from litestar import Request, Response, Router, post
from litestar.params import HeaderParameter, JSONBody
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, ServicesDep
from orgplane.api.idempotency import run_once
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import OrgId
from orgplane.core.access.principal import Principal
from orgplane.core.usage import ingest as usage_ingest


# gc=False: a batch decodes up to 10,000 of these, and fields of strings and ints cannot form a
# reference cycle, so the garbage collector need not track them.
class UsageEvent(Struct, forbid_unknown_fields=True, gc=False):
    meter: Annotated[str, Meta(description="A meter's name, e.g. `operations`")]
    quantity: Annotated[int, Meta(description="How much was used: a whole number ≥ 0")]
    timestamp: Annotated[
        str,
        Meta(
            description="When, as ISO 8601 with a time zone; at most 5 minutes ahead and not "
            "before the start of the org's previous period"
        ),
    ]
    idempotency_key: Annotated[
        str,
        Meta(
            description="1-255 printable characters, unique in the tenant tree; a repeat is "
            "skipped and counted as a duplicate"
        ),
    ]
    org_id: Annotated[
        str | None,
        Meta(description="Public id of an org in the caller's subtree; the path's org if absent"),
    ] = None


# A full batch of the longest events (255-character keys) is about 5 MB: more than the default
# body limit of the other endpoints, which would refuse batches the API promises to take.
MAX_BATCH_BYTES = 6_000_000


class UsageBatch(Struct, forbid_unknown_fields=True):
    events: Annotated[
        list[UsageEvent], Meta(description=f"1 to {usage_ingest.MAX_EVENTS:,} events")
    ]


class UsageIngested(Struct):
    accepted: int
    duplicates: int


@post(
    "/{org_id:str}/usage",
    summary="Report usage",
    status_code=200,
    responses=problems(409, 413, 422),
    request_max_body_size=MAX_BATCH_BYTES,
    description="Records a batch of events and folds them into the org's consumption in one "
    "transaction: all of the batch or none of it. An event whose `idempotency_key` was already "
    "stored in the tenant tree, or repeats one earlier in the batch, is skipped and counted in "
    "`duplicates`. On a meter with hard enforcement, events that would take an org's "
    "consumption this period over its available pool refuse the whole batch (409 "
    "`limit_exceeded`, naming each such event). Validation errors name the field, e.g. "
    "`events[3].quantity`. An `Idempotency-Key` header replays the first response to a retry.",
)
async def ingest_usage(
    org_id: OrgId,
    data: JSONBody[UsageBatch],
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
    idempotency_key: Annotated[
        str | None, HeaderParameter(name="Idempotency-Key", required=False)
    ] = None,
) -> Response[Any]:
    command = functools.partial(
        usage_ingest.ingest, actor=actor, org_ref=org_id, events=data.events
    )
    return await run_once(request, services, actor.principal, idempotency_key, command, _ingested)


def _ingested(result: usage_ingest.IngestResult, principal: Principal) -> Response[UsageIngested]:
    return Response(
        UsageIngested(accepted=result.accepted, duplicates=result.duplicates), status_code=200
    )


router = Router(path="/orgs", route_handlers=[ingest_usage], tags=["usage"])
