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
from typing import Annotated, Any, Literal

from litestar import Request, delete, get, post, put
from litestar.params import FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.sumologic.errors import ERRORS, NotSupported
from orgplane.api.dialects.sumologic.shapes import (
    PLAN_NAMES,
    SETTINGS_KEY,
    AccessKey,
    AccessKeyCreate,
    AllocatedCredits,
    Baselines,
    CseProvisioning,
    DelinkRequest,
    Deployment,
    DeploymentCharge,
    DetailedUsage,
    ListOrganizationResponse,
    OrganizationWithSubscriptionDetails,
    ParentOrgInfo,
    ParentUsage,
    Provisioning,
    ReadOrganizationResponse,
    SubdomainLoginUrl,
    baseline_fields,
    credits_of,
    render,
)
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import org_not_found, reach
from orgplane.core.credentials import service as key_service
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.credits import service as credit_service
from orgplane.core.errors import InvalidInput, NotFound
from orgplane.core.orgs import managed
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs import service as org_service
from orgplane.core.orgs.validation import DEPLOYMENTS
from orgplane.db.engine import Reader
from orgplane.models.orgs import PAID_PLANS

METER = "credits"
_SUMO_ID = re.compile(r"^([a-z0-9]{2,6})-([0-9A-Fa-f]{16})$")
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
    try:
        row = await reach(conn, principal, key, scope=scope, **options)
    except NotFound:
        # Named as the caller named it, whether it does not exist or is out of reach.
        raise org_not_found(value) from None
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


async def _target(
    services: ServicesDep, principal: Principal, header: str | None, ref: str, scope: str
) -> Any:
    """The child a write names, read before its one core call (which reads it again under its
    locks): the header must name the key's deployment, the id an org in reach."""
    async with services.db.read() as conn:
        await own_org(conn, principal, header, scope)
        return await reach_sumo(conn, principal, ref, scope=scope)


async def render_rows(conn: Reader, rows: list[Any]) -> list[ReadOrganizationResponse]:
    ids = [r.id for r in rows]
    amounts = await ledger_queries.balances(conn, ids, METER)
    charges = await ledger_queries.charges(conn, ids, METER)
    return [render(r, amounts.get(r.id, (0, 0))[0], charges.get(r.id, 0)) for r in rows]


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
            "baselines": baseline_fields(data.baselines or Baselines()),
        }
    }
    amount = credits_of(data.baselines)
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
    target = await _target(services, actor.principal, parentDeploymentId, orgId, "credits:write")
    row = await services.db.transaction(
        org_service.update_subscription,
        actor=actor,
        org_ref=target.id,
        meter=METER,
        amount=credits_of(data),
        settings_section=(SETTINGS_KEY, {"baselines": baseline_fields(data)}),
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
    target = await _target(services, actor.principal, parentDeploymentId, orgId, "orgs:write")
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
    target = await _target(services, actor.principal, parentDeploymentId, orgId, "keys:write")
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
