"""Scopes are ``resource:action``; ``write`` implies ``read``; ``*`` is every scope."""

from __future__ import annotations

from collections.abc import Iterable

from orgplane.core.errors import FieldError, InvalidInput

RESOURCES = ("orgs", "keys", "audit", "credits", "usage", "users", "meters", "webhooks")
ACTIONS = ("read", "write")
ALL = "*"
CATALOG: tuple[str, ...] = tuple(f"{r}:{a}" for r in RESOURCES for a in ACTIONS)
SCOPE_DESCRIPTIONS = {
    "orgs:read": "Read organizations, their children, customizations and consumption.",
    "orgs:write": "Create, update, move, delete and restore organizations.",
    "keys:read": "List API keys.",
    "keys:write": "Create and revoke API keys.",
    "audit:read": "Read the audit and access logs.",
    "audit:write": "Reserved; implies audit:read.",
    "credits:read": "Read limits, allocations and the ledger.",
    "credits:write": "Change limits and allocations.",
    "usage:read": "Read usage.",
    "usage:write": "Report usage.",
    "users:read": "Read users and roles.",
    "users:write": "Manage users and roles.",
    "meters:read": "Read meters.",
    "meters:write": "Define and change meters.",
    "webhooks:read": "Read webhooks and their delivery logs.",
    "webhooks:write": "Create, change, rotate, test and delete webhooks; redeliver events.",
}

# The capability (core.people.capabilities.CATALOG) a user-bound principal needs for each scope
# by default; endpoints may name a narrower one. Kept here so that access never imports people.
SCOPE_CAPABILITY: dict[str, str] = {
    "orgs:read": "viewOrganizations",
    "orgs:write": "manageOrganizations",
    "keys:read": "manageApiKeys",
    "keys:write": "manageApiKeys",
    "audit:read": "viewAuditLog",
    "audit:write": "viewAuditLog",
    "credits:read": "viewOrganizations",
    "credits:write": "changeCreditsAllocation",
    "usage:read": "viewOrganizations",
    "usage:write": "ingestUsage",
    "users:read": "viewUsersAndRoles",
    "users:write": "manageUsersAndRoles",
    "meters:read": "viewOrganizations",
    "meters:write": "manageOrganizations",
    # A webhook's log shows the org's events and its endpoints: whoever manages them reads them.
    "webhooks:read": "manageWebhooks",
    "webhooks:write": "manageWebhooks",
}


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a list grants, with ``write`` adding ``read`` and ``*`` adding everything."""
    granted: set[str] = set()
    for scope in scopes:
        if scope == ALL:
            return frozenset((*CATALOG, ALL))
        granted.add(scope)
        resource, _, action = scope.partition(":")
        if action == "write":
            granted.add(f"{resource}:read")
    return frozenset(granted)


def validate(scopes: list[str], field: str = "scopes") -> list[str]:
    """Reject unknown scopes, naming each; return them de-duplicated in a stable order."""
    errors = [
        FieldError(f"{field}[{i}]", f"unknown scope {s!r}; known: *, {', '.join(CATALOG)}")
        for i, s in enumerate(scopes)
        if s != ALL and s not in CATALOG
    ]
    if errors:
        raise InvalidInput("unknown scope", errors=errors)
    if not scopes:
        raise InvalidInput.for_field(field, "at least one scope is required")
    return sorted(set(scopes))
