"""Make's API scopes and the orgplane scopes each stands for (see the package docstring)."""

from __future__ import annotations

from orgplane.core.access.principal import Principal

MAKE_SCOPES: dict[str, tuple[str, ...]] = {
    "organizations:read": ("orgs:read",),
    "organizations:write": ("orgs:write",),
    "managed-organizations:read": ("orgs:read", "credits:read", "usage:read"),
    "managed-organizations:write": ("orgs:write", "credits:write"),
    "user:read": ("users:read",),
    "user:write": ("users:write",),
}


def granted(principal: Principal) -> list[str]:
    """The Make scopes a principal holds: each one whose orgplane scopes it holds all of."""
    return [
        name
        for name, needed in MAKE_SCOPES.items()
        if all(scope in principal.scopes for scope in needed)
    ]
