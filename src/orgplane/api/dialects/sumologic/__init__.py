"""Sumo Logic's APIs under ``/sumologic/api``: users, roles (v1 and v2) and organizations.

Point ``sumologic-sdk`` at it: ``SumoLogic(access_id, access_key,
endpoint="http://HOST:PORT/sumologic/api")`` (always pass an endpoint: without one the SDK asks
api.sumologic.com where to go). Authenticate with a ``sumologic`` key (``POST
/orgs/{id}/api_keys`` with ``"kind": "sumologic"`` gives ``access_id`` and ``access_key``) sent as
HTTP Basic. Everything is the core's: users are the members of the key's organization, roles its
roles, organizations its descendants (reached through ``core.access``), credits its ``credits``
meter; reach, scopes, allocation rules, validation and audit are decided there.

Scopes per operation (a user-bound key also needs the capability of each):

- users and roles: list/get ``users:read``; create, update, delete, assign, unlock, password
  reset, email change, MFA, welcome email ``users:write``;
- organizations: list/get, deployments, login URL, provisioning ``orgs:read``; create
  ``orgs:write`` (+ ``credits:write`` with credits); update ``credits:write`` (+ ``orgs:write`` when
  baselines change); deactivate ``orgs:write`` + ``deactivateOrganizations``; usages, allocated
  credits, parent org ``credits:read`` (regional usages ``usage:read``); access keys
  ``keys:write``.

Ids: users and roles are shown with orgplane's ids (``usr_...``, ``rol_...``, and the system roles
``owner``, ``administrator``, ``standard``, ``read-only``), not Sumo Logic's 16 hex digits;
organizations as ``<deployment>-<16 upper-case hex digits of the org's integer key>``.

Credits ↔ the ``credits`` meter: ``totalCreditsAllocated`` is the child's allocation, taken from
the parent's pool by ``core.credits.service.allocate`` (refused beyond the pool or below what the
child consumed this period); a child in another deployment costs the parent the meter's
deployment charge on top (``deploymentChargeCredits``; ``credits`` = allocation + charge).
``allocatedCredits`` of the parent counts only its non-trial, non-free children.

Limits: 4 requests per second and 10 concurrent requests per access key (``limits.py``); 429 with
``Retry-After`` in Sumo Logic's error envelope (``errors.py``), as 401/403/404/400.

Deviations from Sumo Logic:

- ``delink`` answers 501 ``not_implemented_yet`` (after checking each id): orgplane keeps every
  org in its tree and no API credential can turn a child into a root;
- ``mfa/disable`` is an administrator's reset: it turns the user's TOTP second factor off (seed
  and recovery codes go; ``core.people.users.disable_mfa``) and audits ``user.mfa_disabled``;
  ``email`` must be the user's, ``password`` (the administrator's, in Sumo Logic) is not checked;
- ``managePasswordPolicy`` stands for orgplane's ``manageSignInPolicy``: requiring a second
  factor in an org's subtree (the native ``mfa_required`` of an org);
- orgplane sends no mail: a new user, ``resendWelcomeEmail``, ``password/reset`` and
  ``email/requestChange`` issue the core's tokens (audited), which the native API hands out;
- the ``email`` filter of ``GET /v1/users`` matches a prefix; ``deleteContent`` and
  ``includeServiceAccounts`` are accepted and have nothing to act on;
- capabilities without an orgplane equivalent, and non-empty data filters on roles, are refused
  with a 400 (see ``capabilities.py`` and ``roles.py``); deleting a role still held is a 409;
- ``DetailedUsage.usages`` (per product variable) is empty and ``deploymentChargeCreditsUsed`` 0:
  orgplane meters credits as one quantity and takes the charge at allocation time;
- updating a Trial/Free child's credits does not upgrade its plan; ``trialPlanPeriod`` only
  makes the child a ``trial`` org;
- ``POST /v1/organizations/usages`` is the global ``getUsages`` when ``parentDeploymentId`` is
  sent and the regional ``getChildUsages`` otherwise (``usages.py``).
"""

from litestar import Router
from litestar.di import Provide

from orgplane.api import mounts
from orgplane.api.dialects.openapi import SUMOLOGIC_SECURITY
from orgplane.api.dialects.sumologic import organizations, roles, usages, users
from orgplane.api.dialects.sumologic.errors import EXCEPTION_HANDLERS
from orgplane.api.dialects.sumologic.limits import provide_sumo_principal

router = Router(
    path=mounts.SUMOLOGIC,
    route_handlers=[*users.HANDLERS, *roles.HANDLERS, *organizations.HANDLERS, *usages.HANDLERS],
    tags=["sumologic"],
    security=SUMOLOGIC_SECURITY,
    # The principal of every Sumo Logic operation passes Sumo Logic's own limits too.
    dependencies={"principal": Provide(provide_sumo_principal)},
    exception_handlers=EXCEPTION_HANDLERS,
)
