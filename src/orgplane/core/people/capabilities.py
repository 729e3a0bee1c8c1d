"""The capability catalog, the system roles, and what each API scope needs of a user.

A user-bound principal (a session, or a key tied to a user) may do what its scopes allow AND
what the user's roles in the principal's org grant; its capabilities are read on every request,
so a change to a user's roles takes effect on the next one.
"""

from __future__ import annotations

from collections.abc import Iterable

from orgplane.core.access import scopes as scope_catalog
from orgplane.core.errors import FieldError, InvalidInput

CATALOG: dict[str, str] = {
    "viewOrganizations": "See organizations, their children, credits, consumption and meters.",
    "createOrganizations": "Create child organizations.",
    "manageOrganizations": "Change organizations: names, tags, settings, moves, restores.",
    "deactivateOrganizations": "Deactivate and delete organizations.",
    "changeCreditsAllocation": "Set limits and allocate credits and operations to children.",
    "viewUsersAndRoles": "See users, memberships, roles and invitations.",
    "manageUsersAndRoles": "Invite, change and remove users; define and assign roles.",
    "manageApiKeys": "Create, list and revoke API keys.",
    "viewAuditLog": "Read the audit trail of the organization and its descendants.",
    "viewAccessLog": "Read the access log.",
    "ingestUsage": "Report usage.",
    "manageCustomizations": "Change customizations.",
    "manageSignInPolicy": "Require two-factor sign-in in the organization and its descendants.",
    "manageWebhooks": "Create, change and delete webhooks; read their delivery logs; redeliver.",
}
# Owners only among the system roles: administrators cannot turn their own org's two-factor
# requirement off.
MANAGE_SIGN_IN_POLICY = "manageSignInPolicy"

# Holding the key implies holding each of the listed capabilities.
IMPLIES: dict[str, tuple[str, ...]] = {
    "createOrganizations": ("viewOrganizations",),
    "manageOrganizations": ("viewOrganizations",),
    "deactivateOrganizations": ("viewOrganizations",),
    "changeCreditsAllocation": ("viewOrganizations",),
    "manageUsersAndRoles": ("viewUsersAndRoles",),
    "manageCustomizations": ("viewOrganizations",),
    "ingestUsage": ("viewOrganizations",),
    "manageSignInPolicy": ("viewOrganizations",),
    "manageWebhooks": ("viewOrganizations",),
}

_VIEW = ("viewOrganizations", "viewUsersAndRoles", "viewAuditLog", "viewAccessLog")
SYSTEM_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "owner": ("Owner", tuple(CATALOG)),
    "administrator": (
        "Administrator",
        tuple(c for c in CATALOG if c != MANAGE_SIGN_IN_POLICY),
    ),
    "standard": (
        "Standard",
        (*_VIEW, "createOrganizations", "ingestUsage", "manageCustomizations"),
    ),
    "read-only": ("Read-only", _VIEW),
}
# Roles an org must never be left without a holder of.
GUARDIAN_ROLES = ("owner", "administrator")

# The capability each scope needs by default lives with the scopes (access decides with it).
SCOPE_CAPABILITY = scope_catalog.SCOPE_CAPABILITY


def expand(capabilities: Iterable[str]) -> frozenset[str]:
    """The capabilities held, with everything they imply."""
    held: set[str] = set()
    for capability in capabilities:
        held.add(capability)
        held.update(IMPLIES.get(capability, ()))
    return frozenset(held)


def of_system_role(key: str) -> tuple[str, ...]:
    return SYSTEM_ROLES[key][1]


def with_dependencies(capabilities: Iterable[str], *, autofill: bool, field: str) -> list[str]:
    """The capabilities with those they imply: added when ``autofill``, else a 400 naming each
    capability whose implied ones are missing (``extra["missing"]``: capability → missing)."""
    given = sorted(set(capabilities))
    missing = {
        c: [d for d in IMPLIES.get(c, ()) if d not in given]
        for c in given
        if any(d not in given for d in IMPLIES.get(c, ()))
    }
    if not missing:
        return given
    if autofill:
        return sorted(expand(given))
    raise InvalidInput(
        "missing dependencies: "
        + "; ".join(f"{c} needs {', '.join(deps)}" for c, deps in missing.items()),
        errors=[FieldError(field, f"{c} needs {', '.join(deps)}") for c, deps in missing.items()],
        extra={"missing": missing},
    )
