"""Sumo Logic's Organizations Management API (the global assembly): the child organizations of
the access key's organization, their credits and their usage.

Every operation of the global assembly requires the header ``parentDeploymentId``: it must name
the deployment of the key's organization (400 otherwise). Ids are ``<deployment>-<16 hex>``
(``orgplane.core.ids.sumo_org_id``). Credits are the core's ``credits`` meter:
``totalCreditsAllocated`` is the child's allocation (``allocatedCredits``), the deployment charge
a child in another deployment costs its parent is ``deploymentChargeCredits``, and ``credits``
is their sum. The other baselines, and the contact of the create call, are kept in the org's
``settings`` under ``sumologic``; the contact becomes the child's first administrator (a pending
user with an invitation).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from litestar import Request, delete, get, post, put
from litestar.params import FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType, structs

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.sumologic.errors import ERRORS, NotSupported
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import org_not_found, reach, reach_by_key
from orgplane.core.credentials import service as key_service
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.credits import service as credit_service
from orgplane.core.errors import InvalidInput
from orgplane.core.ids import sumo_org_id
from orgplane.core.orgs import managed
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs import service as org_service
from orgplane.core.orgs.validation import DEPLOYMENTS
from orgplane.db.engine import Reader
from orgplane.models.orgs import PAID_PLANS

METER = "credits"
SETTINGS_KEY = "sumologic"
_SUMO_ID = re.compile(r"^([a-z0-9]{2,6})-([0-9A-Fa-f]{16})$")
PLAN_NAMES = {"trial": "Trial", "free": "Free", "pro": "Professional", "enterprise": "Enterprise"}
STATUS_FILTERS = {"Active": "active", "Inactive": "deactivated", "All": None}

OrgId = Annotated[
    str, PathParameter(description="`<deployment>-<16 hex>`, e.g. us2-00000000FF42A0C3")
]
ParentDeployment = Annotated[
    str | None,
    HeaderParameter(
        name="parentDeploymentId",
        max_length=16,
        description="The deployment of the caller's organization, e.g. `us2` (required)",
    ),
]
Count = Annotated[int, Meta(ge=0, le=10**15)]


class FeatureActivation(Struct):
    cse: bool = False


class Baselines(Struct, omit_defaults=False):
    continuousIngest: Count = 0
    frequentIngest: Count = 0
    infrequentIngest: Count = 0
    metrics: Count = 0
    tracingIngest: Count = 0
    cseIngest: Count = 0
    featureActivation: FeatureActivation | None = None
    totalCreditsAllocated: Count | UnsetType = UNSET


class OrganizationWithSubscriptionDetails(Struct):
    email: Annotated[str, Meta(min_length=3, max_length=255)]
    organizationName: Annotated[
        str, Meta(min_length=1, max_length=100, pattern=r"^([a-zA-Z0-9 +%\-@.,_()]+)$")
    ]
    firstName: Annotated[str, Meta(min_length=1, max_length=128)]
    deploymentId: Annotated[str, Meta(min_length=2, max_length=6)]
    lastName: Annotated[str, Meta(max_length=128)] = ""
    trialPlanPeriod: Annotated[int, Meta(ge=1, le=60)] | None = None
    baselines: Baselines | None = None


class Plan(Struct):
    planName: str


class CreditsSubscription(Struct):
    startDate: date
    status: str
    plan: Plan
    credits: int
    deploymentChargeCredits: int
    allocatedCredits: int
    baselines: Baselines


class ReadOrganizationResponse(Struct):
    orgId: str
    organizationName: str
    email: str
    firstName: str
    lastName: str
    deploymentId: str
    subscription: CreditsSubscription
    isSSOSetup: bool = False


class ListOrganizationResponse(Struct):
    data: list[ReadOrganizationResponse]
    next: str | None


class Deployment(Struct):
    deploymentId: str
    serviceUrl: str
    apiUrl: str


class ParentUsage(Struct):
    totalCapacity: float
    totalCreditsUsed: float
    creditsAllocated: float


class AllocatedCredits(Struct):
    creditsAllocated: float


class DetailedUsage(Struct):
    totalCapacity: float
    totalCreditsUsed: float
    deploymentChargeCreditsUsed: float
    allocatedCreditsUsed: float
    usages: list[dict[str, Any]]


class DeploymentCharge(Struct):
    deploymentId: str
    deploymentCharge: float


class ParentOrgInfo(Struct):
    isEligibleForTrialOrgs: bool
    isEligibleForDeploymentCharge: bool
    deploymentCharges: list[DeploymentCharge]
    planName: str


class AccessKeyCreate(Struct):
    label: Annotated[str, Meta(min_length=1, max_length=128)]
    corsHeaders: Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=20)] = []
    scopes: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=50)] | None = None


class AccessKey(Struct):
    id: str
    label: str
    corsHeaders: list[str]
    disabled: bool
    createdAt: Any
    createdBy: str
    modifiedAt: Any
    lastUsed: Any
    scopes: list[str]
    effectiveScopes: list[str]
    key: str


class DelinkRequest(Struct):
    orgIds: Annotated[
        list[Annotated[str, Meta(max_length=23)]], Meta(min_length=1, max_length=1000)
    ]


class SubdomainLoginUrl(Struct):
    subdomainLoginUrl: str


class CseProvisioning(Struct):
    isProvisioned: bool = False
    isProvisioningToggleAllowed: bool = False


class Provisioning(Struct):
    cse: CseProvisioning


# --- ids, the header, rendering ----------------------------------------------------------------


def parse_org_id(value: str, field: str = "orgId") -> tuple[str, int]:
    match = _SUMO_ID.match(value)
    if match is None:
        raise InvalidInput.for_field(field, "must be `<deployment>-<16 hex digits>`")
    return match.group(1), int(match.group(2), 16)


async def reach_sumo(
    conn: Reader, principal: Principal, value: str, *, scope: str, **options: Any
) -> Any:
    """The org a Sumo Logic id names, reached like any other (404 outside the key's subtree)."""
    deployment, key = parse_org_id(value)
    row = await reach_by_key(conn, principal, key, scope=scope, **options)
    if row.deployment != deployment:
        raise org_not_found(value)
    return row


async def own_org(conn: Reader, principal: Principal, header: str | None, scope: str) -> Any:
    """The key's organization, once ``parentDeploymentId`` names its deployment."""
    org = await reach(conn, principal, principal.org_public_id, scope=scope)
    if not header:
        raise InvalidInput.for_field("header.parentDeploymentId", "is required")
    if header != org.deployment:
        raise InvalidInput.for_field(
            "header.parentDeploymentId",
            f"must be {org.deployment!r}, the deployment of the access key's organization",
        )
    return org


def org_ref(row: Any) -> str:
    return sumo_org_id(row.deployment, row.id)


def _sumo_settings(row: Any) -> dict[str, Any]:
    value = (row.settings or {}).get(SETTINGS_KEY)
    return value if isinstance(value, dict) else {}


def _baselines(row: Any, amount: int) -> Baselines:
    stored = _sumo_settings(row).get("baselines") or {}
    fields = {k: v for k, v in stored.items() if k in Baselines.__struct_fields__}
    if isinstance(fields.get("featureActivation"), dict):
        fields["featureActivation"] = FeatureActivation(**fields["featureActivation"])
    return Baselines(**fields, totalCreditsAllocated=amount)


def render(row: Any, amount: int, charge: int) -> ReadOrganizationResponse:
    contact = _sumo_settings(row).get("contact") or {}
    return ReadOrganizationResponse(
        orgId=org_ref(row),
        organizationName=row.name,
        email=contact.get("email", ""),
        firstName=contact.get("firstName", ""),
        lastName=contact.get("lastName", ""),
        deploymentId=row.deployment,
        subscription=CreditsSubscription(
            startDate=row.created_at.date(),
            status="Active" if row.status == "active" and row.deleted_at is None else "Canceled",
            plan=Plan(PLAN_NAMES.get(row.plan, row.plan)),
            credits=amount + charge,
            deploymentChargeCredits=charge,
            allocatedCredits=amount,
            baselines=_baselines(row, amount),
        ),
    )


async def render_rows(conn: Reader, rows: list[Any]) -> list[ReadOrganizationResponse]:
    ids = [r.id for r in rows]
    amounts = await ledger_queries.balances(conn, ids, METER)
    charges = await ledger_queries.charges(conn, ids, METER)
    return [render(r, amounts.get(r.id, (0, 0))[0], charges.get(r.id, 0)) for r in rows]


def _baseline_fields(baselines: Baselines) -> dict[str, Any]:
    fields = structs.asdict(baselines)
    fields.pop("totalCreditsAllocated", None)
    if baselines.featureActivation is not None:
        fields["featureActivation"] = structs.asdict(baselines.featureActivation)
    return {k: v for k, v in fields.items() if v is not None}


def _credits(baselines: Baselines | None) -> int | None:
    if baselines is None or isinstance(baselines.totalCreditsAllocated, UnsetType):
        return None
    return baselines.totalCreditsAllocated


# --- operations --------------------------------------------------------------------------------


@get("/v1/deployments", summary="Get deployments", responses=ERRORS)
async def list_deployments(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> list[Deployment]:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "orgs:read")
    base = str(request.base_url).rstrip("/")
    # One orgplane serves every deployment: each has the same API and console.
    return [Deployment(d, f"{base}/console", f"{base}/sumologic/api") for d in DEPLOYMENTS]


@get("/v1/organizations", summary="List organizations", responses=ERRORS)
async def list_organizations(
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    token: Annotated[str | None, QueryParameter(max_length=512)] = None,
    status: FromQuery[Literal["Active", "Inactive", "All"]] = "Active",
) -> ListOrganizationResponse:
    async with services.db.read() as conn:
        parent = await own_org(conn, principal, parentDeploymentId, "orgs:read")
        page = await org_queries.list_children(
            conn,
            principal,
            parent.public_id,
            limit=limit,
            cursor=token,
            status=STATUS_FILTERS[status],
        )
        data = await render_rows(conn, page.rows)
    return ListOrganizationResponse(data, page.next_cursor)


@post(
    "/v1/organizations",
    summary="Create a child organization",
    status_code=200,
    responses=ERRORS,
    description="Needs `orgs:write`, and `credits:write` when `baselines.totalCreditsAllocated` "
    "is set. The contact becomes the child's first administrator (pending, invited).",
)
async def create_organization(
    data: JSONBody[OrganizationWithSubscriptionDetails],
    services: ServicesDep,
    actor: ActorDep,
    parentDeploymentId: ParentDeployment = None,
) -> ReadOrganizationResponse:
    async with services.db.read() as conn:
        parent = await own_org(conn, actor.principal, parentDeploymentId, "orgs:write")
    settings = {
        SETTINGS_KEY: {
            "contact": {
                "email": data.email,
                "firstName": data.firstName,
                "lastName": data.lastName,
            },
            "baselines": _baseline_fields(data.baselines or Baselines()),
        }
    }
    amount = _credits(data.baselines)
    created = await services.db.transaction(
        managed.create_managed,
        actor=actor,
        parent_ref=parent.public_id,
        fields={
            "name": data.organizationName,
            "deployment": data.deploymentId,
            "plan": "trial" if data.trialPlanPeriod else parent.plan,
            "settings": settings,
        },
        max_depth=services.settings.max_tree_depth,
        allocations={METER: amount} if amount else None,
        # The contact becomes the child's first administrator, invited.
        owner=managed.Owner(
            email=data.email,
            profile={"first_name": data.firstName, "last_name": data.lastName},
            role="administrator",
            scope="orgs:write",
        ),
    )
    async with services.db.read() as conn:
        return (await render_rows(conn, [created.org]))[0]


@get("/v1/organizations/{orgId:str}", summary="Get an organization", responses=ERRORS)
async def get_organization(
    orgId: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> ReadOrganizationResponse:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "orgs:read")
        row = await reach_sumo(conn, principal, orgId, scope="orgs:read")
        return (await render_rows(conn, [row]))[0]


@put(
    "/v1/organizations/{orgId:str}",
    summary="Update a child organization's subscription",
    responses=ERRORS,
    description="`totalCreditsAllocated` becomes the child's `credits` allocation "
    "(`credits:write`; refused below what it consumed this period or beyond the parent's pool); "
    "changed baselines are stored (`orgs:write`).",
)
async def update_organization(
    orgId: OrgId,
    data: JSONBody[Baselines],
    services: ServicesDep,
    actor: ActorDep,
    parentDeploymentId: ParentDeployment = None,
) -> ReadOrganizationResponse:
    async with services.db.read() as conn:
        await own_org(conn, actor.principal, parentDeploymentId, "credits:write")
        target = await reach_sumo(conn, actor.principal, orgId, scope="credits:write")
    row = await services.db.transaction(
        org_service.update_subscription,
        actor=actor,
        org_ref=target.id,
        meter=METER,
        amount=_credits(data),
        settings_section=(SETTINGS_KEY, {"baselines": _baseline_fields(data)}),
    )
    async with services.db.read() as conn:
        return (await render_rows(conn, [row]))[0]


@delete(
    "/v1/organizations/{orgId:str}",
    summary="Deactivate a child organization",
    status_code=200,
    responses=ERRORS,
    description="The child becomes `deactivated` (its unused credits return to the parent); its "
    "data stays in orgplane. Needs `orgs:write` and `deactivateOrganizations`.",
)
async def deactivate_organization(
    orgId: OrgId,
    services: ServicesDep,
    actor: ActorDep,
    parentDeploymentId: ParentDeployment = None,
) -> ReadOrganizationResponse:
    async with services.db.read() as conn:
        await own_org(conn, actor.principal, parentDeploymentId, "orgs:write")
        target = await reach_sumo(conn, actor.principal, orgId, scope="orgs:write")
    row = await services.db.transaction(
        org_service.set_status, actor=actor, org_ref=target.id, status="deactivated"
    )
    async with services.db.read() as conn:
        return (await render_rows(conn, [row]))[0]


@get(
    "/v1/organizations/usages",
    summary="Get the parent organization's usage",
    responses=ERRORS,
)
async def parent_usage(
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> ParentUsage:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, parentDeploymentId, "credits:read")
        _, meters = await ledger_queries.credits_report(conn, principal, org.public_id)
    credits = next(m for m in meters if m["meter"] == METER)
    return ParentUsage(
        totalCapacity=credits["limit"] or 0,
        totalCreditsUsed=credits["consumed"],
        creditsAllocated=credits["allocated"],
    )


async def detailed_usage(conn: Reader, principal: Principal, row: Any) -> DetailedUsage:
    _, meters = await ledger_queries.credits_report(conn, principal, row.public_id)
    credits = next(m for m in meters if m["meter"] == METER)
    # orgplane takes the deployment charge from the parent's pool when it allocates, not from
    # usage; and it meters credits as one quantity, without a per-product breakdown.
    return DetailedUsage(
        totalCapacity=credits["limit"] or 0,
        totalCreditsUsed=credits["consumed"],
        deploymentChargeCreditsUsed=0,
        allocatedCreditsUsed=credits["consumed"],
        usages=[],
    )


@get(
    "/v1/organizations/usages/{orgId:str}",
    summary="Get an organization's usage",
    responses=ERRORS,
)
async def org_usage(
    orgId: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> DetailedUsage:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "credits:read")
        row = await reach_sumo(conn, principal, orgId, scope="credits:read")
        return await detailed_usage(conn, principal, row)


@get(
    "/v1/organizations/allocatedCredits",
    summary="Get the credits allocated to paid child organizations",
    responses=ERRORS,
)
async def allocated_credits(
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> AllocatedCredits:
    async with services.db.read() as conn:
        parent = await own_org(conn, principal, parentDeploymentId, "credits:read")
        total = await ledger_queries.allocated_to_children(conn, parent, METER, plans=PAID_PLANS)
    return AllocatedCredits(total)


@get(
    "/v1/organizations/parentOrg",
    summary="Get the parent organization's details",
    responses=ERRORS,
)
async def parent_org(
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> ParentOrgInfo:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, parentDeploymentId, "credits:read")
        meter = await credit_service.get_meter(conn, METER)
    pct = float(meter.deployment_charge_pct or 0)
    return ParentOrgInfo(
        isEligibleForTrialOrgs=True,
        isEligibleForDeploymentCharge=pct > 0,
        deploymentCharges=[DeploymentCharge(d, pct) for d in DEPLOYMENTS if d != org.deployment],
        planName=PLAN_NAMES.get(org.plan, org.plan),
    )


@post(
    "/v1/organizations/{orgId:str}/accessKey",
    summary="Create an access key for a child organization",
    status_code=200,
    responses=ERRORS,
    description="Mints a `sumologic` credential of the child (`keys:write`). `scopes` are "
    "orgplane scopes (e.g. `orgs:read`), by default those of the calling key; `key` is shown "
    "only here.",
)
async def create_access_key(
    orgId: OrgId,
    data: JSONBody[AccessKeyCreate],
    services: ServicesDep,
    actor: ActorDep,
    parentDeploymentId: ParentDeployment = None,
) -> AccessKey:
    async with services.db.read() as conn:
        await own_org(conn, actor.principal, parentDeploymentId, "keys:write")
        target = await reach_sumo(conn, actor.principal, orgId, scope="keys:write")
    # Without scopes, the new key may do what the creating key may (Sumo Logic's default), and
    # it lives as long as the creating key (mint's defaults).
    created = await services.db.transaction(
        key_service.mint,
        actor=actor,
        org_ref=target.public_id,
        name=data.label,
        kind="sumologic",
        scopes=data.scopes,
    )
    row = created.row
    return AccessKey(
        id=created.vendor["access_id"],
        label=row.name,
        corsHeaders=data.corsHeaders,
        disabled=False,
        createdAt=row.created_at,
        createdBy=actor.label,
        modifiedAt=row.created_at,
        lastUsed=None,
        scopes=list(row.scopes),
        effectiveScopes=list(row.scopes),
        key=created.vendor["access_key"],
    )


@put(
    "/v1/organizations/delink",
    summary="Delink deactivated child organizations",
    responses=ERRORS,
    description="Not supported: orgplane keeps every organization in its tenant tree, and no API "
    "credential can turn a child into a root. Each id is checked (404 outside the key's reach), "
    "then the call is refused with 501 `not_implemented_yet`.",
)
async def delink(
    data: JSONBody[DelinkRequest],
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> str:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "orgs:write")
        for ref in data.orgIds:
            await reach_sumo(conn, principal, ref, scope="orgs:write")
    raise NotSupported(
        "delink is not supported: orgplane keeps every organization in its tenant tree; a "
        "deactivated child stays under its parent (move it with the native API instead)"
    )


@get(
    "/v1/organizations/{orgId:str}/subdomainLoginUrl",
    summary="Get an organization's login URL",
    responses=ERRORS,
)
async def subdomain_login_url(
    orgId: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> SubdomainLoginUrl:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "orgs:read")
        await reach_sumo(conn, principal, orgId, scope="orgs:read")
    return SubdomainLoginUrl(f"{str(request.base_url).rstrip('/')}/console")


@get(
    "/v1/organizations/provisioning/{orgId:str}",
    summary="Get an organization's Cloud SIEM provisioning",
    responses=ERRORS,
    description="orgplane has no Cloud SIEM: never provisioned, and the toggle is not allowed.",
)
async def provisioning(
    orgId: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
) -> Provisioning:
    async with services.db.read() as conn:
        await own_org(conn, principal, parentDeploymentId, "orgs:read")
        await reach_sumo(conn, principal, orgId, scope="orgs:read")
    return Provisioning(CseProvisioning())


HANDLERS = [
    list_deployments,
    list_organizations,
    create_organization,
    get_organization,
    update_organization,
    deactivate_organization,
    parent_usage,
    org_usage,
    allocated_credits,
    parent_org,
    create_access_key,
    delink,
    subdomain_login_url,
    provisioning,
]
