"""Monthly consumption per meter, for an org, its subtree, or each child."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, get
from litestar.params import FromQuery, QueryParameter

from orgplane.api.deps import PrincipalDep, ServicesDep
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import OrgId
from orgplane.api.native.schemas import Consumption, ConsumptionEntry, MeterConsumption
from orgplane.core.usage import consumption as usage


@get(
    "/{org_id:str}/consumption",
    summary="Monthly consumption",
    responses=problems(),
    description="Per meter: consumed, extra (over the limit), limit, utilization, a linear "
    "forecast to the end of the period, and changes against the previous week and period. "
    "`rollup=subtree` adds all descendants; `rollup=children` gives one entry per child, each "
    "with its subtree's total.",
)
async def get_consumption(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    period: Annotated[
        str | None, QueryParameter(description="YYYY-MM; the current month if absent")
    ] = None,
    rollup: FromQuery[Literal["self", "subtree", "children"]] = "self",
) -> Consumption:
    async with services.db.read() as conn:
        result = await usage.report(conn, principal, org_id, period=period, rollup=rollup)
    return Consumption(
        org_id=result["org"].public_id,
        period=result["period"],
        rollup=result["rollup"],
        timezone=result["timezone"],
        last_reset=result["last_reset"],
        next_reset=result["next_reset"],
        days_elapsed=result["days_elapsed"],
        days_in_period=result["days_in_period"],
        entries=[
            ConsumptionEntry(
                org_id=entry["org"].public_id,
                name=entry["org"].name,
                meters=[MeterConsumption(**m) for m in entry["meters"]],
            )
            for entry in result["entries"]
        ],
    )


router = Router(path="/orgs", route_handlers=[get_consumption], tags=["consumption"])
