"""Datadog permissions ↔ orgplane capabilities: the one table both directions are read from.

Each capability of ``orgplane.core.people.capabilities.CATALOG`` is one Datadog permission with
a Datadog-style name; its id is a stable UUID (uuid5 of the permission's name), the same on every
installation, so a script can keep permission ids as Datadog users do.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from orgplane.core.errors import FieldError, InvalidInput
from orgplane.core.people.capabilities import CATALOG

NAMESPACE = uuid.UUID("5d0c6b8e-3a51-4c1f-9a51-6f7267706c61")
# The catalog has no creation time of its own; Datadog's `created` is a date-time, so one is fixed.
CREATED = "2024-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Permission:
    capability: str
    name: str
    display_name: str
    group_name: str
    display_type: str

    @property
    def id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, self.name))


_TABLE: tuple[Permission, ...] = (
    Permission("viewOrganizations", "org_read", "Organizations Read", "Organizations", "read"),
    Permission(
        "createOrganizations", "org_create", "Organizations Create", "Organizations", "write"
    ),
    Permission("manageOrganizations", "org_management", "Org Management", "Organizations", "write"),
    Permission(
        "deactivateOrganizations",
        "org_deactivate",
        "Organizations Deactivate",
        "Organizations",
        "write",
    ),
    Permission("changeCreditsAllocation", "usage_edit", "Usage Edit", "Billing and Usage", "write"),
    Permission(
        "viewUsersAndRoles", "user_access_read", "User Access Read", "Access Management", "read"
    ),
    Permission(
        "manageUsersAndRoles",
        "user_access_manage",
        "User Access Manage",
        "Access Management",
        "write",
    ),
    Permission(
        "manageApiKeys", "api_keys_write", "API Keys Write", "API and Application Keys", "write"
    ),
    Permission("viewAuditLog", "audit_logs_read", "Audit Trail Read", "Compliance", "read"),
    Permission("viewAccessLog", "access_logs_read", "Access Log Read", "Compliance", "read"),
    Permission("ingestUsage", "usage_ingest", "Usage Ingest", "Billing and Usage", "write"),
    Permission(
        "manageCustomizations",
        "org_customizations_write",
        "Customizations Write",
        "Organizations",
        "write",
    ),
    Permission(
        "manageSignInPolicy",
        "org_login_policy_write",
        "Login Policy Write",
        "Access Management",
        "write",
    ),
    Permission("manageWebhooks", "org_webhooks_write", "Webhooks Write", "Integrations", "write"),
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# A capability added to the catalog without a Datadog name yet still is a permission.
_TABLE = _TABLE + tuple(
    Permission(c, _snake(c), _snake(c).replace("_", " ").title(), "orgplane", "write")
    for c in CATALOG
    if c not in {p.capability for p in _TABLE}
)
BY_CAPABILITY = {p.capability: p for p in _TABLE}
BY_ID = {p.id: p for p in _TABLE}


def resource(permission: Permission) -> dict[str, Any]:
    """A Datadog ``Permission`` resource."""
    return {
        "type": "permissions",
        "id": permission.id,
        "attributes": {
            "name": permission.name,
            "display_name": permission.display_name,
            "description": CATALOG[permission.capability],
            "created": CREATED,
            "group_name": permission.group_name,
            "display_type": permission.display_type,
            "restricted": False,
        },
    }


def resources(capabilities: list[str] | frozenset[str]) -> list[dict[str, Any]]:
    """The permissions of these capabilities, in the catalog's order."""
    return [resource(p) for p in _TABLE if p.capability in capabilities]


def every() -> list[dict[str, Any]]:
    return [resource(p) for p in _TABLE]


def refs(capabilities: list[str] | frozenset[str]) -> list[dict[str, str]]:
    return [{"type": "permissions", "id": p.id} for p in _TABLE if p.capability in capabilities]


def capability_of(permission_id: str, field: str) -> str:
    """The capability a permission id stands for, or a 400 naming the field."""
    permission = BY_ID.get(permission_id)
    if permission is None:
        raise InvalidInput(
            f"{field}: unknown permission {permission_id!r}; see GET /api/v2/permissions",
            errors=[FieldError(field, f"unknown permission {permission_id!r}")],
        )
    return permission.capability
