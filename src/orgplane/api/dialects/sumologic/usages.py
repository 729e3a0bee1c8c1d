"""``POST /v1/organizations/usages``: one path, two of Sumo Logic's operations.

With the header ``parentDeploymentId`` it is the global assembly's ``getUsages``: the body is a
bare JSON array of org ids, the answer their ``BasicUsage``. Without it, it is the regional
``getChildUsages`` (tag ``orgsManagement``): an optional ``{startDate, endDate}`` and, for each
child of the key's organization, its allocated credits and usage %, forecast % and changes, from
the core's consumption report. orgplane reports calendar months: both dates must fall in one
month (the current one by default).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from litestar import Request, post
from litestar.params import QueryParameter
from msgspec import Meta, Struct

from orgplane.api.body import decode_body
from orgplane.api.deps import PrincipalDep, ServicesDep
from orgplane.api.dialects.sumologic.errors import ERRORS
from orgplane.api.dialects.sumologic.organizations import (
    METER,
    ParentDeployment,
    detailed_usage,
    own_org,
    reach_sumo,
)
from orgplane.api.dialects.sumologic.shapes import org_ref
from orgplane.core.access.principal import Principal
from orgplane.core.errors import InvalidInput
from orgplane.core.usage import consumption
from orgplane.db.engine import Reader

MAX_BODY = 64_000
OrgIds = Annotated[list[Annotated[str, Meta(max_length=23)]], Meta(min_length=1, max_length=1000)]
STATUSES = {"active": "Active", "disabled": "Active", "deactivated": "Deactivated"}


class ChildUsageDetailsRequest(Struct, forbid_unknown_fields=True):
    startDate: date | None = None
    endDate: date | None = None


class BasicUsage(Struct):
    orgId: str
    totalCapacity: float
    totalCreditsUsed: float
    deploymentChargeCreditsUsed: float
    allocatedCreditsUsed: float


class ListUsagesResponse(Struct):
    data: list[BasicUsage]
    next: str | None = None


class ChildUsage(Struct):
    totalCreditsUsed: float
    usagePercentage: float | None
    forecastPercentage: float | None
    usagePercentChangeWoW: float | None
    usagePercentChange: float | None


class ChildUsageDetail(Struct):
    orgId: str
    orgName: str
    status: str
    allocatedCredits: float | None
    usages: ChildUsage


class ChildUsageDetailsResponse(Struct):
    data: list[ChildUsageDetail]


def _decode(body: bytes, kind: Any) -> Any:
    if len(body) > MAX_BODY:
        raise InvalidInput.for_field("body", f"must be at most {MAX_BODY} bytes")
    return decode_body(body, kind)


def _period(data: ChildUsageDetailsRequest | None) -> str | None:
    if data is None or (data.startDate is None and data.endDate is None):
        return None
    start = data.startDate or data.endDate
    end = data.endDate or data.startDate
    assert start is not None and end is not None
    if end < start:
        raise InvalidInput.for_field("endDate", "must not be before startDate")
    if (start.year, start.month) != (end.year, end.month):
        raise InvalidInput.for_field(
            "endDate", "orgplane reports by calendar month: use dates within one month"
        )
    return f"{start.year:04d}-{start.month:02d}"


async def _child_usages(
    conn: Reader, principal: Principal, data: ChildUsageDetailsRequest | None
) -> ChildUsageDetailsResponse:
    report = await consumption.report(
        conn, principal, principal.org_public_id, period=_period(data), rollup="children"
    )
    out = []
    for entry in report["entries"]:
        row = entry["org"]
        credits = next(m for m in entry["meters"] if m["meter"] == METER)
        out.append(
            ChildUsageDetail(
                orgId=org_ref(row),
                orgName=row.name,
                status=STATUSES.get(row.status, "Deactivated"),
                allocatedCredits=credits["limit"],
                usages=ChildUsage(
                    totalCreditsUsed=credits["consumed"],
                    usagePercentage=credits["utilization_pct"],
                    forecastPercentage=credits["forecast_utilization_pct"],
                    usagePercentChangeWoW=credits["change_vs_previous_week_pct"],
                    usagePercentChange=credits["change_vs_previous_period_pct"],
                ),
            )
        )
    return ChildUsageDetailsResponse(out)


async def _usages(conn: Reader, principal: Principal, ids: list[str]) -> ListUsagesResponse:
    out = []
    for ref in ids:
        row = await reach_sumo(conn, principal, ref, scope="credits:read")
        usage = await detailed_usage(conn, principal, row)
        out.append(
            BasicUsage(
                orgId=ref,
                totalCapacity=usage.totalCapacity,
                totalCreditsUsed=usage.totalCreditsUsed,
                deploymentChargeCreditsUsed=usage.deploymentChargeCreditsUsed,
                allocatedCreditsUsed=usage.allocatedCreditsUsed,
            )
        )
    return ListUsagesResponse(out)


@post(
    "/v1/organizations/usages",
    summary="Usage of child organizations",
    status_code=200,
    responses=ERRORS,
    description="With `parentDeploymentId` (global assembly, `getUsages`): body `[orgId, ...]`, "
    "answer `{data: [BasicUsage]}`. Without it (regional `orgsManagement`, `getChildUsages`): "
    "body `{startDate?, endDate?}` (YYYY-MM-DD, one calendar month), answer "
    "`{data: [ChildUsageDetail]}` for every child. Needs `usage:read` / `credits:read`.",
)
async def post_usages(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    parentDeploymentId: ParentDeployment = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    token: Annotated[str | None, QueryParameter(max_length=512)] = None,
) -> ListUsagesResponse | ChildUsageDetailsResponse:
    body = await request.body()
    async with services.db.read() as conn:
        if parentDeploymentId is None:
            data = _decode(body, ChildUsageDetailsRequest | None)
            return await _child_usages(conn, principal, data)
        await own_org(conn, principal, parentDeploymentId, "credits:read")
        ids = _decode(body, OrgIds)
        start = int(token) if token and token.isdigit() else 0
        page = await _usages(conn, principal, ids[start : start + limit])
        if start + limit < len(ids):
            page.next = str(start + limit)
        return page


HANDLERS = [post_usages]
