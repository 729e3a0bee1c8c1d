"""Sumo Logic's shapes for the Organizations Management API: the request and response bodies,
and how an org row (with its ``sumologic`` settings) is shown in them."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType, structs

from orgplane.core.ids import sumo_org_id

SETTINGS_KEY = "sumologic"
PLAN_NAMES = {"trial": "Trial", "free": "Free", "pro": "Professional", "enterprise": "Enterprise"}

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


def org_ref(row: Any) -> str:
    return sumo_org_id(row.deployment, row.id)


def sumo_settings(row: Any) -> dict[str, Any]:
    value = (row.settings or {}).get(SETTINGS_KEY)
    return value if isinstance(value, dict) else {}


def stored_baselines(row: Any, amount: int) -> Baselines:
    stored = sumo_settings(row).get("baselines") or {}
    fields = {k: v for k, v in stored.items() if k in Baselines.__struct_fields__}
    if isinstance(fields.get("featureActivation"), dict):
        fields["featureActivation"] = FeatureActivation(**fields["featureActivation"])
    return Baselines(**fields, totalCreditsAllocated=amount)


def render(row: Any, amount: int, charge: int) -> ReadOrganizationResponse:
    contact = sumo_settings(row).get("contact") or {}
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
            baselines=stored_baselines(row, amount),
        ),
    )


def baseline_fields(baselines: Baselines) -> dict[str, Any]:
    fields = structs.asdict(baselines)
    fields.pop("totalCreditsAllocated", None)
    if baselines.featureActivation is not None:
        fields["featureActivation"] = structs.asdict(baselines.featureActivation)
    return {k: v for k, v in fields.items() if v is not None}


def credits_of(baselines: Baselines | None) -> int | None:
    if baselines is None or isinstance(baselines.totalCreditsAllocated, UnsetType):
        return None
    return baselines.totalCreditsAllocated
