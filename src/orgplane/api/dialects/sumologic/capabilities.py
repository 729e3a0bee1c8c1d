"""Sumo Logic's role capabilities ↔ orgplane's capability catalog, in one place.

Sumo Logic names that have an orgplane equivalent are accepted and stored as it; orgplane
capabilities without a Sumo Logic name (``viewAccessLog``, ``ingestUsage``) keep their own. A
role is rendered with one Sumo Logic name per orgplane capability (the first below). Sumo Logic's
other capabilities (collectors, dashboards, Cloud SIEM, ...) govern data orgplane does not hold:
they are refused with a 400 that names them, rather than stored and never enforced.
"""

from __future__ import annotations

from orgplane.core.errors import FieldError, InvalidInput
from orgplane.core.people.capabilities import CATALOG, with_dependencies

# Sumo Logic name → orgplane capability. The first Sumo name of each orgplane capability is the
# one a role is rendered with.
TO_ORGPLANE: dict[str, str] = {
    "viewOrganizations": "viewOrganizations",
    "createOrganizations": "createOrganizations",
    "createTrialOrganizations": "createOrganizations",
    "manageOrganizations": "manageOrganizations",
    "upgradeTrialOrganizations": "manageOrganizations",
    "deactivateOrganizations": "deactivateOrganizations",
    "changeCreditsAllocation": "changeCreditsAllocation",
    "viewUsersAndRoles": "viewUsersAndRoles",
    "manageUsersAndRoles": "manageUsersAndRoles",
    "manageAccessKeys": "manageApiKeys",
    "createAccessKeys": "manageApiKeys",
    "searchAuditIndex": "viewAuditLog",
    "manageOrgSettings": "manageCustomizations",
    # Sumo Logic's password policy is where it requires MFA.
    "managePasswordPolicy": "manageSignInPolicy",
    "viewAccessLog": "viewAccessLog",
    "ingestUsage": "ingestUsage",
    # Sumo Logic's webhooks are "connections".
    "manageConnections": "manageWebhooks",
}
TO_SUMO: dict[str, str] = {}
for _sumo, _orgplane in TO_ORGPLANE.items():
    TO_SUMO.setdefault(_orgplane, _sumo)
assert set(TO_SUMO) == set(CATALOG), "every orgplane capability needs a Sumo Logic name"


def to_orgplane(names: list[str], *, autofill: bool, field: str = "capabilities") -> list[str]:
    """The orgplane capabilities of a Sumo Logic list, with their dependencies added
    (``autofill``) or a 400 naming the missing ones."""
    errors = [
        FieldError(
            f"{field}[{i}]",
            f"{name!r} is not a capability orgplane supports; supported: " + ", ".join(TO_ORGPLANE),
        )
        for i, name in enumerate(names)
        if name not in TO_ORGPLANE
    ]
    if errors:
        raise InvalidInput(
            "unsupported capability: " + ", ".join(repr(n) for n in names if n not in TO_ORGPLANE),
            errors=errors,
        )
    mapped = sorted({TO_ORGPLANE[name] for name in names})
    try:
        return with_dependencies(mapped, autofill=autofill, field=field)
    except InvalidInput as exc:
        # Name the dependencies in Sumo Logic's words.
        missing = exc.extra.get("missing", {})
        needs = "; ".join(
            f"{TO_SUMO[c]} needs {', '.join(TO_SUMO[d] for d in deps)}"
            for c, deps in missing.items()
        )
        raise InvalidInput(
            f"capabilities with missing dependencies: {needs}",
            errors=[
                FieldError(
                    field, f"{needs} (send autofillDependencies=true to add the dependencies)"
                )
            ],
        ) from None


def to_sumo(capabilities: list[str]) -> list[str]:
    return sorted(TO_SUMO.get(c, c) for c in capabilities)
