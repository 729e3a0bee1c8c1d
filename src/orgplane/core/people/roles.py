"""Roles: the system roles every org has (not editable) and an org's own, and who holds them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orgplane.core.access.principal import Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.errors import Conflict, FieldError, InvalidInput, NotFound
from orgplane.core.orgs.validation import DESCRIPTION_MAX, clean_name
from orgplane.core.people import memberships as ms
from orgplane.core.people import repository
from orgplane.core.people.capabilities import CATALOG, IMPLIES, SYSTEM_ROLES
from orgplane.core.people.repository import unique
from orgplane.db.engine import Reader, Tx

MAX_CUSTOM_ROLES = 200
CONCURRENT_ROLE = "a concurrent change created a role with the same name; retry"


@dataclass(frozen=True)
class RoleView:
    id: str
    name: str
    description: str
    capabilities: list[str]
    system: bool
    users: int
    created_at: datetime | None = None
    modified_at: datetime | None = None


def catalog() -> list[dict[str, Any]]:
    return [
        {"name": name, "description": text, "implies": list(IMPLIES.get(name, ()))}
        for name, text in CATALOG.items()
    ]


def clean_capabilities(value: Any, field: str = "capabilities") -> list[str]:
    if not isinstance(value, list):
        raise InvalidInput.for_field(field, "must be a list of capability names")
    errors = [
        FieldError(f"{field}[{i}]", f"unknown capability {c!r}; see GET /capabilities")
        for i, c in enumerate(value)
        if not isinstance(c, str) or c not in CATALOG
    ]
    if errors:
        raise InvalidInput(
            "unknown capability: " + ", ".join(repr(v) for v in value if v not in CATALOG),
            errors=errors,
        )
    return sorted(set(value))


def clean_description(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput.for_field("description", "must be a string")
    if len(value) > DESCRIPTION_MAX:
        raise InvalidInput.for_field("description", f"must be at most {DESCRIPTION_MAX} characters")
    return value.strip()


def _system_view(key: str, users: int) -> RoleView:
    name, capabilities = SYSTEM_ROLES[key]
    return RoleView(key, name, f"The {name} system role", sorted(capabilities), True, users)


def _custom_view(row: Any, users: int) -> RoleView:
    return RoleView(
        row.public_id,
        row.name,
        row.description,
        list(row.capabilities),
        False,
        users,
        row.created_at,
        row.modified_at,
    )


def _describe(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "capabilities": list(row.capabilities),
    }


async def list_roles(conn: Reader, principal: Principal, org_ref: str) -> list[RoleView]:
    """System roles first (in catalog order), then the org's own by name."""
    org = await reach(conn, principal, org_ref, scope="users:read")
    rows = await repository.custom_roles(conn, org.id)
    counts = await repository.holder_counts(
        conn, org.id, [*SYSTEM_ROLES, *(r.public_id for r in rows)]
    )
    return [_system_view(k, counts.get(k, 0)) for k in SYSTEM_ROLES] + [
        _custom_view(r, counts.get(r.public_id, 0)) for r in rows
    ]


async def _custom(conn: Reader, org: Any, role_ref: str) -> Any:
    row = await repository.custom_role(conn, org.id, role_ref)
    if row is None:
        raise NotFound(f"role {role_ref!r} not found in organization {org.public_id!r}")
    return row


async def get_role(conn: Reader, principal: Principal, org_ref: str, role_ref: str) -> RoleView:
    org = await reach(conn, principal, org_ref, scope="users:read")
    count = (await repository.holder_counts(conn, org.id, [role_ref])).get(role_ref, 0)
    if role_ref in SYSTEM_ROLES:
        return _system_view(role_ref, count)
    return _custom_view(await _custom(conn, org, role_ref), count)


async def _name_free(conn: Reader, org: Any, name: str, except_id: int | None = None) -> None:
    taken = await repository.role_named(conn, org.id, name.lower(), except_id=except_id)
    system_names = {n.lower() for n, _ in SYSTEM_ROLES.values()} | set(SYSTEM_ROLES)
    if taken is not None or name.lower() in system_names:
        raise Conflict(
            f"a role named {name!r} already exists in organization {org.public_id!r}",
            extra={"role_id": taken.public_id if taken is not None else name.lower()},
        )


async def create_role(
    tx: Tx,
    actor: Caller,
    org_ref: str,
    *,
    name: Any,
    description: Any,
    capabilities: Any,
    holders: Iterable[str] | None = None,
) -> RoleView:
    """A new role of the org; ``holders`` (user ids) are given it at once (SCIM's group
    members, Sumo Logic's ``users``)."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    name = clean_name(name)
    description = clean_description(description)
    capabilities = clean_capabilities(capabilities)
    ms.check_grantable(principal, capabilities)
    await _name_free(tx.conn, org, name)
    if await repository.count_custom_roles(tx, org.id) >= MAX_CUSTOM_ROLES:
        raise Conflict(f"an organization can have at most {MAX_CUSTOM_ROLES} custom roles")
    with unique(CONCURRENT_ROLE):
        row = await repository.insert_role(
            tx, org=org, name=name, description=description, capabilities=capabilities
        )
    audit.record(
        tx,
        actor,
        action="role.created",
        root_id=org.root_id,
        org_id=org.id,
        target_type="role",
        target_id=row.public_id,
        after=_describe(row),
    )
    if holders is not None:
        await set_holders(tx, actor, org_ref, row.public_id, holders)
        count = (await repository.holder_counts(tx.conn, org.id, [row.public_id])).get(
            row.public_id, 0
        )
        return _custom_view(row, count)
    return _custom_view(row, 0)


def _not_editable(role_ref: str) -> Conflict:
    return Conflict(f"{role_ref!r} is a system role; system roles cannot be changed or deleted")


async def update_role(
    tx: Tx,
    actor: Caller,
    org_ref: str,
    role_ref: str,
    fields: dict[str, Any],
    *,
    holders: Iterable[str] | None = None,
) -> RoleView:
    """Apply the given fields (PUT passes them all, PATCH those sent); with ``holders``, the
    role's holders become exactly those users."""
    if holders is None:
        return await _update_role(tx, actor, org_ref, role_ref, fields)
    if fields:  # a system role's holders change, the role itself does not
        await _update_role(tx, actor, org_ref, role_ref, fields)
    await set_holders(tx, actor, org_ref, role_ref, holders)
    return await get_role(tx.conn, actor.principal, org_ref, role_ref)


async def _update_role(
    tx: Tx, actor: Caller, org_ref: str, role_ref: str, fields: dict[str, Any]
) -> RoleView:
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    if role_ref in SYSTEM_ROLES:
        raise _not_editable(role_ref)
    before = await _custom(tx.conn, org, role_ref)
    values: dict[str, Any] = {}
    if "name" in fields:
        name = clean_name(fields["name"])
        if name != before.name:
            await _name_free(tx.conn, org, name, except_id=before.id)
            values.update(name=name, name_normalized=name.lower())
    if "description" in fields:
        description = clean_description(fields["description"])
        if description != before.description:
            values["description"] = description
    if "capabilities" in fields:
        capabilities = clean_capabilities(fields["capabilities"])
        if capabilities != list(before.capabilities):
            ms.check_grantable(principal, capabilities)
            values["capabilities"] = capabilities
    count = (await repository.holder_counts(tx.conn, org.id, [role_ref])).get(role_ref, 0)
    if not values:
        return _custom_view(before, count)
    with unique(CONCURRENT_ROLE):
        after = await repository.write_role(tx, before.id, values)
    audit.record(
        tx,
        actor,
        action="role.updated",
        root_id=org.root_id,
        org_id=org.id,
        target_type="role",
        target_id=role_ref,
        before=_describe(before),
        after=_describe(after),
    )
    return _custom_view(after, count)


async def delete_role(tx: Tx, actor: Caller, org_ref: str, role_ref: str) -> None:
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    if role_ref in SYSTEM_ROLES:
        raise _not_editable(role_ref)
    row = await _custom(tx.conn, org, role_ref)
    count = (await repository.holder_counts(tx.conn, org.id, [role_ref])).get(role_ref, 0)
    if count:
        raise Conflict(
            f"role {role_ref!r} is held by {count} user{'s' if count != 1 else ''}; "
            "reassign them before deleting it",
            extra={"users": count},
        )
    await repository.delete_role(tx, row.id)
    audit.record(
        tx,
        actor,
        action="role.deleted",
        root_id=org.root_id,
        org_id=org.id,
        target_type="role",
        target_id=role_ref,
        before=_describe(row),
    )


async def assign(
    tx: Tx, actor: Caller, org_ref: str, role_ref: str, user_ref: str, *, grant: bool
) -> None:
    """Give (``grant``) or take away one role from one member; repeating either is a no-op."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    if role_ref not in SYSTEM_ROLES:
        await _custom(tx.conn, org, role_ref)
    member = await ms.find_member(tx.conn, org, user_ref)
    held = (await ms.roles_of(tx.conn, org.id, [member.id]))[member.id]
    if grant == (role_ref in held):
        return
    if grant:
        resolved = await ms.resolve_roles(tx.conn, org, [role_ref], field="role_id")
        ms.check_grantable(principal, resolved[role_ref])
        with unique("a concurrent change gave this member the same role; retry"):
            await repository.grant_role(tx, org.id, member.id, role_ref)
    else:
        await ms.ensure_guardian_left(tx.conn, org, member.id, [r for r in held if r != role_ref])
        await repository.revoke_role(tx, org.id, member.id, role_ref)
    audit.record(
        tx,
        actor,
        action="role.assigned" if grant else "role.unassigned",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=member.public_id,
        before={"roles": held},
        after={"role": role_ref},
    )


async def set_holders(
    tx: Tx, actor: Caller, org_ref: str, role_ref: str, user_refs: Iterable[str]
) -> None:
    """Give the role to exactly these members (each grant and removal audited as by
    ``assign``, and checked: a grant within the actor's own capabilities, a guardian left)."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="users:write", lock="update")
    current = await repository.role_holders(tx, org.id, role_ref)
    wanted = set(user_refs)
    for user_ref in sorted(wanted - current):
        await assign(tx, actor, org_ref, role_ref, user_ref, grant=True)
    for user_ref in sorted(current - wanted):
        await assign(tx, actor, org_ref, role_ref, user_ref, grant=False)


async def clone_role(tx: Tx, *, actor: Caller, org_ref: str, role_ref: str, name: Any) -> RoleView:
    """A new role of the org with this name and the description and capabilities of
    ``role_ref`` (a system role or one of the org's own)."""
    source = await get_role(tx.conn, actor.principal, org_ref, role_ref)
    return await create_role(
        tx,
        actor,
        org_ref,
        name=name,
        description=source.description,
        capabilities=source.capabilities,
    )


async def change_capability(
    tx: Tx, *, actor: Caller, org_ref: str, role_ref: str, capability: str, grant: bool
) -> RoleView:
    """Add (``grant``) or take away one capability of one of the org's roles."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="users:write", lock="update")
    if role_ref in SYSTEM_ROLES:
        raise _not_editable(role_ref)
    held = set((await _custom(tx.conn, org, role_ref)).capabilities)
    wanted = held | {capability} if grant else held - {capability}
    return await update_role(tx, actor, org_ref, role_ref, {"capabilities": sorted(wanted)})
