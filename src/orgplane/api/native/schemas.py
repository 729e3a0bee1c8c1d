"""Request and response bodies of the native API (msgspec structs, snake_case JSON)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.core.ids import sumo_org_id

OrgStatus = Literal["active", "disabled", "deactivated"]
Plan = Literal["trial", "free", "pro", "enterprise"]
Name = Annotated[
    str, Meta(min_length=1, max_length=200, description="1-100 characters after trimming")
]


class Problem(Struct, omit_defaults=True):
    """An RFC 9457 problem document; ``errors`` lists each bad field."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, str]] = []


class Message(Struct):
    message: str


class Org(Struct):
    id: str = msgspec.field(name="id")
    uuid: str
    key: int
    sumo_id: str
    parent_id: str | None
    name: str
    description: str
    status: str
    deployment: str
    country: str | None
    timezone: str
    plan: str
    depth: int
    tags: list[str]
    settings: dict[str, Any]
    customizations: dict[str, Any]
    # Every member signing in to this org or to a descendant needs a second factor.
    mfa_required: bool
    created_at: datetime
    modified_at: datetime
    deleted_at: datetime | None
    version: int


class OrgCreate(Struct, forbid_unknown_fields=True):
    name: Name
    description: str | UnsetType = UNSET
    deployment: str | UnsetType = UNSET
    country: str | UnsetType | None = UNSET
    timezone: str | UnsetType = UNSET
    plan: Plan | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET
    customizations: dict[str, Any] | UnsetType = UNSET
    # Initial allocations from the parent's pool, {meter: amount}, in the same transaction.
    allocations: dict[str, int] | UnsetType = UNSET


class OrgUpdate(Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    description: str | UnsetType = UNSET
    status: OrgStatus | UnsetType = UNSET
    country: str | UnsetType | None = UNSET
    timezone: str | UnsetType = UNSET
    plan: Plan | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET
    customizations: dict[str, Any] | UnsetType = UNSET
    mfa_required: (
        Annotated[
            bool,
            Meta(
                description="Require a second factor of every member signing in to this "
                "organization or a descendant (needs the manageSignInPolicy capability: owners)"
            ),
        ]
        | UnsetType
    ) = UNSET


class OrgMove(Struct, forbid_unknown_fields=True):
    parent_id: Annotated[str, Meta(min_length=1, max_length=64)]


class OrgPage(Struct):
    data: list[Org]
    next_cursor: str | None


class ApiKeyCreate(Struct, forbid_unknown_fields=True):
    name: Name
    scopes: Annotated[list[str], Meta(min_length=1, max_length=50)]
    # Left out: the creating key's expiry; null: never (only for a creator that never expires).
    expires_at: datetime | UnsetType | None = UNSET
    # The member of the org the key acts as: it can do what its scopes AND the user's roles allow.
    user_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    # The secret's format: "native" (opk_...), "make" (a UUID4, sent as "Token <uuid>"),
    # "datadog" (DD-API-KEY + DD-APPLICATION-KEY) or "sumologic" (Basic accessId:accessKey).
    kind: Annotated[str, Meta(min_length=1, max_length=32)] = "native"


class ApiKey(Struct):
    id: str
    org_id: str
    name: str
    kind: str
    hint: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    user_id: str | None = None


class ApiKeyCreated(ApiKey):
    """Returned once, on creation: ``api_key`` is the secret and is never shown again."""

    api_key: str = ""
    # The secret again under the vendor's names: Make's token; Datadog's application key (its
    # API key is ``api_key``); Sumo Logic's access id and access key (``api_key`` is then
    # ``<access_id>:<access_key>``, the pair HTTP Basic carries).
    token: str | UnsetType = UNSET
    application_key: str | UnsetType = UNSET
    access_id: str | UnsetType = UNSET
    access_key: str | UnsetType = UNSET


class ApiKeyPage(Struct):
    data: list[ApiKey]
    next_cursor: str | None


class AuditEntry(Struct):
    id: int
    seq: int
    timestamp: datetime
    org_id: str
    actor: str
    actor_key_id: str | None
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    request_id: str | None
    ip: str | None
    user_agent: str | None
    # Where the change came from: api, datadog, make, sumologic, scim, console or cli (None on
    # entries written before orgplane recorded it).
    surface: str | None
    hash: str


class AuditPage(Struct):
    data: list[AuditEntry]
    next_cursor: str | None


class AccessLogEntry(Struct):
    id: int
    timestamp: datetime
    user: str
    key_id: str | None
    action: str
    status: str
    method: str | None
    path: str | None
    ip: str | None
    user_agent: str | None
    detail: str | None


class AccessLogPage(Struct):
    data: list[AccessLogEntry]
    next_cursor: str | None


class EventData(Struct):
    """What an event says: the audit entry it is, as the reader may see it (orgs outside the
    reader's reach named in ``before``/``after`` are null)."""

    org_id: Annotated[str, Meta(description="Public id of the organization the change is of")]
    sequence: Annotated[
        int, Meta(description="Position in the tenant's log: events are ordered by it")
    ]
    actor: Annotated[str, Meta(description="Who made the change, e.g. key:key_abc, user:usr_abc")]
    actor_key_id: str | None
    surface: Annotated[
        str | None,
        Meta(description="api, datadog, make, sumologic, scim, console or cli (None on older)"),
    ]
    target_type: str
    target_id: str
    before: Any
    after: Any
    request_id: str | None


class Event(Struct):
    """An event, in the Standard Webhooks payload shape: every audited change is one, typed
    by its audit action (``org.created``, ``credits.allocated``,
    ``usage.threshold_crossed``...)."""

    id: Annotated[str, Meta(description="Stable and unique: evt_ and 32 hex digits")]
    type: str
    timestamp: Annotated[str, Meta(description="When it was committed, ISO 8601 UTC")]
    data: EventData


class EventPage(Struct):
    data: list[Event]
    next_cursor: Annotated[
        str,
        Meta(
            description="Always present: poll again with ?after=<next_cursor> for what follows "
            "(it may advance past entries of the tenant that are not this subtree's)"
        ),
    ]


AlertScope = Literal["org", "subtree"]
Percent = Annotated[int, Meta(ge=1, le=1000, description="A percentage of the limit, 1-1000")]


class AlertPut(Struct, forbid_unknown_fields=True):
    thresholds: (
        Annotated[
            list[Percent],
            Meta(min_length=1, max_length=10, description="Unique; default [50, 80, 100]"),
        ]
        | UnsetType
    ) = UNSET
    scope: Annotated[
        AlertScope,
        Meta(description="org: the org's own consumption; subtree: its subtree's roll-up"),
    ] = "org"


class AlertThreshold(Struct):
    threshold: int
    # The consumption period (YYYY-MM) it last fired in; None if it has not fired since set.
    last_fired_period: str | None
    # Whether it fires when usage next reaches it in last_fired_period (re-armed after a new
    # allocation took utilization below it); it fires anew in every later period regardless.
    armed: bool


class Alert(Struct):
    org_id: str
    meter: str
    scope: AlertScope
    thresholds: list[AlertThreshold]
    updated_at: datetime


class AlertList(Struct):
    data: list[Alert]


class MeterConsumption(Struct):
    meter: str
    unit: str
    consumed: int
    extra: int
    limit: int | None
    utilization_pct: float | None
    forecast: int
    forecast_utilization_pct: float | None
    last_week: int
    change_vs_previous_week_pct: float | None
    previous_period: int
    change_vs_previous_period_pct: float | None


class ConsumptionEntry(Struct):
    org_id: str
    name: str
    meters: list[MeterConsumption]


class Consumption(Struct):
    org_id: str
    period: str
    rollup: str
    timezone: str
    last_reset: datetime
    next_reset: datetime
    days_elapsed: int
    days_in_period: int
    entries: list[ConsumptionEntry]


class Me(Struct):
    key_id: str
    key_name: str
    org_id: str
    scopes: list[str]
    expires_at: datetime | None


class Health(Struct, omit_defaults=True):
    status: str
    database: str | None = None


def org_out(row: Any, *, show_parent: bool = True) -> Org:
    # Positional, in the field order of ``Org``: a list page builds a hundred of these, and
    # msgspec takes positional arguments faster than keywords.
    key = row.id
    deployment = row.deployment
    deleted_at = row.deleted_at
    return Org(
        row.public_id,
        row.uuid,
        key,
        sumo_org_id(deployment, key),
        row.parent_public_id if show_parent else None,
        row.name,
        row.description,
        "deleted" if deleted_at is not None else row.status,
        deployment,
        row.country,
        row.timezone,
        row.plan,
        row.depth,
        list(row.tags),
        row.settings,
        row.customizations,
        row.mfa_required,
        row.created_at,
        row.modified_at,
        deleted_at,
        row.version,
    )


def org_page_out(page: Any) -> OrgPage:
    """A page of orgs (``core.orgs.service.Page``) as the API shows it."""
    return OrgPage([org_out(r) for r in page.rows], page.next_cursor)


def key_out(row: Any, org_public_id: str) -> ApiKey:
    return ApiKey(
        id=row.public_id,
        org_id=org_public_id,
        name=row.name,
        kind=row.kind,
        hint=row.hint,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        user_id=row.user_public_id,
    )


def set_fields(struct: Struct) -> dict[str, Any]:
    """The fields a client actually sent (UNSET ones left out)."""
    return {
        name: getattr(struct, name)
        for name in struct.__struct_fields__
        if getattr(struct, name) is not UNSET
    }


__all__ = ["UNSET", "date"]
