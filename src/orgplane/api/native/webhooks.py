"""Native webhook endpoints: create (secret shown once), list, get, update, delete, test,
rotate the secret, the delivery log, redelivery."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from litestar import Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType, structs

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.events import event_out
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import Cursor, Limit, OrgId
from orgplane.api.native.schemas import Event
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import DEFAULT_LIMIT
from orgplane.core.webhooks import service as webhooks
from orgplane.core.webhooks.sender import Sender

WebhookId = Annotated[str, PathParameter(description="The webhook's id (whk_...)", max_length=64)]
Url = Annotated[str, Meta(min_length=1, max_length=2000)]
Pattern = Annotated[str, Meta(min_length=1, max_length=64)]
EventTypes = Annotated[
    list[Pattern],
    Meta(
        min_length=1,
        max_length=50,
        description="Event types to send (`org.created`), `*` standing for any run of "
        "characters (`credits.*`, `*`)",
    ),
]
Description = Annotated[str, Meta(max_length=500)]


class WebhookCreate(Struct, forbid_unknown_fields=True):
    url: Annotated[
        Url,
        Meta(
            description="https:// (plain http only to ORGPLANE_WEBHOOK_ALLOWED_NETWORKS); no "
            "credentials in it"
        ),
    ]
    event_types: EventTypes
    include_descendants: Annotated[
        bool,
        Meta(description="Also send the events of every organization below this one"),
    ] = True
    description: Description | None = None


class WebhookUpdate(Struct, forbid_unknown_fields=True):
    url: Url | UnsetType = UNSET
    event_types: EventTypes | UnsetType = UNSET
    include_descendants: bool | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    enabled: Annotated[bool, Meta(description="true re-enables a disabled webhook")] | UnsetType = (
        UNSET
    )


class Webhook(Struct):
    id: str
    org_id: str
    url: str
    event_types: list[str]
    include_descendants: bool
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    # Since when every attempt has failed (null: the last one succeeded).
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    # During a rotation: until when the previous secret signs too.
    previous_secret_expires_at: datetime | None


class WebhookCreated(Webhook):
    """Returned on creation and rotation only: ``secret`` signs the deliveries (Standard
    Webhooks, ``whsec_...``) and is never shown again."""

    secret: str = ""


class WebhookPage(Struct):
    data: list[Webhook]
    next_cursor: str | None


class SecretRotation(Struct, forbid_unknown_fields=True):
    overlap_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=7 * 86400,
            description="How long the current secret keeps signing too (both signatures are "
            "sent); 0 ends it now",
        ),
    ] = 86400


class DeliveryAttempt(Struct):
    """One request sent to the endpoint."""

    id: int
    event_id: str
    event_type: str
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    latency_ms: int
    response_excerpt: str | None


class DeliveryAttemptPage(Struct):
    data: list[DeliveryAttempt]
    next_cursor: str | None


class TestResult(Struct):
    event_id: str
    event: Event
    delivered: bool
    status_code: int | None
    error: str | None
    latency_ms: int
    response_excerpt: str | None


class Redelivery(Struct, forbid_unknown_fields=True):
    """Either ``event_id``, or a range of event times (``since`` <= time < ``until``)."""

    event_id: Annotated[str, Meta(min_length=1, max_length=40)] | None = None
    since: datetime | None = None
    until: datetime | None = None


class Redelivered(Struct):
    queued: int


def webhook_out(row: Any) -> Webhook:
    return Webhook(
        id=row.public_id,
        org_id=row.org_public_id,
        url=row.url,
        event_types=list(row.event_types),
        include_descendants=row.include_descendants,
        description=row.description,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        failing_since=row.failing_since,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )


def _created(created: webhooks.Created) -> WebhookCreated:
    return WebhookCreated(**structs.asdict(webhook_out(created.row)), secret=created.secret)


@post(
    "/{org_id:str}/webhooks",
    summary="Create a webhook",
    status_code=201,
    responses=problems(),
    description="The signing secret is in `secret` of this response only; orgplane stores it "
    "sealed. Deliveries follow the Standard Webhooks specification (`webhook-id`, "
    "`webhook-timestamp`, `webhook-signature`), at least once, retried with backoff.",
)
async def create_webhook(
    org_id: OrgId, data: JSONBody[WebhookCreate], services: ServicesDep, actor: ActorDep
) -> WebhookCreated:
    created = await services.db.transaction(
        webhooks.create,
        actor=actor,
        org_ref=org_id,
        url=data.url,
        event_types=data.event_types,
        include_descendants=data.include_descendants,
        description=data.description,
        networks=services.settings.webhook_networks,
        secret_key=services.settings.secret_key,
    )
    return _created(created)


@get("/{org_id:str}/webhooks", summary="List webhooks", responses=problems())
async def list_webhooks(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> WebhookPage:
    async with services.db.read() as conn:
        rows, next_cursor = await webhooks.list_webhooks(
            conn, principal, org_id, limit=limit, cursor=cursor
        )
    return WebhookPage([webhook_out(r) for r in rows], next_cursor)


@get("/{org_id:str}/webhooks/{webhook_id:str}", summary="Get a webhook", responses=problems())
async def get_webhook(
    org_id: OrgId, webhook_id: WebhookId, services: ServicesDep, principal: PrincipalDep
) -> Webhook:
    async with services.db.read() as conn:
        row = await webhooks.get(conn, principal, org_id, webhook_id)
    return webhook_out(row)


@patch("/{org_id:str}/webhooks/{webhook_id:str}", summary="Update a webhook", responses=problems())
async def update_webhook(
    org_id: OrgId,
    webhook_id: WebhookId,
    data: JSONBody[WebhookUpdate],
    services: ServicesDep,
    actor: ActorDep,
) -> Webhook:
    changes = {f: getattr(data, f) for f in data.__struct_fields__ if getattr(data, f) is not UNSET}
    for field in ("url", "event_types", "include_descendants", "enabled"):
        if field in changes and changes[field] is None:
            raise InvalidInput.for_field(field, "must not be null")
    row = await services.db.transaction(
        webhooks.update,
        actor=actor,
        org_ref=org_id,
        webhook_ref=webhook_id,
        changes=changes,
        networks=services.settings.webhook_networks,
    )
    return webhook_out(row)


@delete(
    "/{org_id:str}/webhooks/{webhook_id:str}",
    summary="Delete a webhook",
    status_code=204,
    responses=problems(),
)
async def delete_webhook(
    org_id: OrgId, webhook_id: WebhookId, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(
        webhooks.delete, actor=actor, org_ref=org_id, webhook_ref=webhook_id
    )


@post(
    "/{org_id:str}/webhooks/{webhook_id:str}/rotate_secret",
    summary="Rotate a webhook's signing secret",
    status_code=200,
    responses=problems(),
    description="The new secret is in `secret` of this response only. The current one keeps "
    "signing too until `previous_secret_expires_at` (`overlap_seconds`, 24 hours by default): "
    "meanwhile `webhook-signature` carries both signatures.",
)
async def rotate_secret(
    org_id: OrgId,
    webhook_id: WebhookId,
    services: ServicesDep,
    actor: ActorDep,
    data: JSONBody[SecretRotation | None] = None,
) -> WebhookCreated:
    overlap = (data or SecretRotation()).overlap_seconds
    created = await services.db.transaction(
        webhooks.rotate_secret,
        actor=actor,
        org_ref=org_id,
        webhook_ref=webhook_id,
        overlap=timedelta(seconds=overlap),
        secret_key=services.settings.secret_key,
    )
    return _created(created)


@post(
    "/{org_id:str}/webhooks/{webhook_id:str}/test",
    summary="Send a test event to a webhook",
    status_code=200,
    responses=problems(),
    description="Sends a `webhook.test` event now (once, not retried), shaped as every event "
    "is (`Event`), and answers with it and the attempt's outcome, which the delivery log shows "
    "too.",
)
async def test_webhook(
    org_id: OrgId, webhook_id: WebhookId, services: ServicesDep, actor: ActorDep
) -> TestResult:
    settings = services.settings
    sender = Sender.of(settings)
    try:
        event, outcome = await webhooks.send_test(
            services.db,
            sender,
            actor=actor,
            org_ref=org_id,
            webhook_ref=webhook_id,
            secret_key=settings.secret_key,
        )
    finally:
        await sender.close()
    return TestResult(
        event_id=event["id"],
        event=event_out(event),
        delivered=outcome.delivered,
        status_code=outcome.status_code,
        error=outcome.error,
        latency_ms=outcome.latency_ms,
        response_excerpt=outcome.excerpt,
    )


@get(
    "/{org_id:str}/webhooks/{webhook_id:str}/deliveries",
    summary="A webhook's delivery log",
    responses=problems(),
    description="Every request sent to the endpoint, newest first: the event, the attempt's "
    "number, its time, the HTTP status or the error, the latency and the first kilobyte of the "
    "answer.",
)
async def list_deliveries(
    org_id: OrgId,
    webhook_id: WebhookId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> DeliveryAttemptPage:
    async with services.db.read() as conn:
        rows, next_cursor = await webhooks.attempts(
            conn, principal, org_id, webhook_id, limit=limit, cursor=cursor
        )
    return DeliveryAttemptPage(
        [
            DeliveryAttempt(
                id=r.id,
                event_id=r.event_id,
                event_type=r.event_type,
                attempt=r.attempt,
                at=r.at,
                status_code=r.status_code,
                error=r.error,
                latency_ms=r.latency_ms,
                response_excerpt=r.response_excerpt,
            )
            for r in rows
        ],
        next_cursor,
    )


@post(
    "/{org_id:str}/webhooks/{webhook_id:str}/redeliver",
    summary="Send events to a webhook again",
    status_code=202,
    responses=problems(),
    description="Queues again the event `event_id`, or the events of a time range (`since` <= "
    "event time < `until`), that were queued for this webhook before. Each is sent with its "
    "own `webhook-id`, so a receiver that has it already can drop it.",
)
async def redeliver(
    org_id: OrgId,
    webhook_id: WebhookId,
    data: JSONBody[Redelivery],
    services: ServicesDep,
    actor: ActorDep,
) -> Redelivered:
    for name in ("since", "until"):
        value = getattr(data, name)
        if value is not None and value.tzinfo is None:
            raise InvalidInput.for_field(name, "must include a time zone, e.g. 'Z'")
    queued = await services.db.transaction(
        webhooks.redeliver,
        actor=actor,
        org_ref=org_id,
        webhook_ref=webhook_id,
        event_id=data.event_id,
        since=data.since,
        until=data.until,
    )
    return Redelivered(queued=queued)


router = Router(
    path="/orgs",
    route_handlers=[
        create_webhook,
        list_webhooks,
        get_webhook,
        update_webhook,
        delete_webhook,
        rotate_secret,
        test_webhook,
        list_deliveries,
        redeliver,
    ],
    tags=["webhooks"],
)
