"""The organization tree's commands: create, change, set the status, move, delete, restore.

Every command takes the transaction first, then keyword arguments (the acting ``Caller`` first),
checks reach through ``access.service.reach``, queues its audit entries on the transaction and
registers its after-commit effects (``Tx.forget_keys``). The SQL is ``repository``'s; listings
are ``queries``'.

Locking (PostgreSQL; SQLite has one writer): every write that changes the shape of a tree locks
its tenant root row first: a move, a delete or a restore FOR UPDATE, a create FOR KEY SHARE
(creates do not block each other; only FOR UPDATE conflicts with KEY SHARE). Structural changes
in one tree are therefore serialized, and none of them runs while a create is in flight: a move
that has the tree sees every child created before it, and a create that has the tree reads its
parent's path after the last move committed. Locking only the parent and the moved subtree is not
enough in READ COMMITTED: a row inserted under a locked parent after the move's subtree read was
neither counted for the depth cap nor (when its own child was created before the move's UPDATE
took its snapshot) rewritten, leaving a path that no longer matched its parent's.

Rows read before the tree lock only serve the reach check; each function reads its target again
after taking the lock. Then the org rows it changes, then the audit chain head (at commit): the
order is the same everywhere, so these writers cannot deadlock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from orgplane.core.access.principal import Actor, Caller
from orgplane.core.access.service import org_not_found, reach, require_scope
from orgplane.core.audit import service as audit
from orgplane.core.credits import allocation
from orgplane.core.credits import service as credits
from orgplane.core.errors import (
    ConfirmationRequired,
    Conflict,
    Gone,
    InvalidInput,
    PreconditionFailed,
)
from orgplane.core.locks import lock_tree
from orgplane.core.orgs import repository
from orgplane.core.orgs.validation import clean_fields, clean_name
from orgplane.core.usage.counters import carry_subtree_usage, consumed_this_period
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow

AUDITED_FIELDS = (
    "name",
    "description",
    "status",
    "deployment",
    "country",
    "timezone",
    "plan",
    "settings",
    "tags",
    "customizations",
    "mfa_required",
)
UPDATABLE_FIELDS = frozenset(AUDITED_FIELDS)


def snapshot(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in AUDITED_FIELDS}


def etag(row: Any) -> str:
    return f'"{row.uuid}.{row.version}"'


def check_if_match(row: Any, if_match: str | None) -> None:
    if if_match is None:
        return
    candidates = [c.strip() for c in if_match.split(",")]
    current = etag(row)
    if "*" in candidates:
        return
    if not any(c.removeprefix("W/") == current for c in candidates):
        raise PreconditionFailed(
            f"the organization has changed (its ETag is now {current}); read it again and retry",
            headers={"ETag": current},
        )


async def create_root(tx: Tx, actor: Actor, *, name: str, **fields: Any) -> Any:
    """A new tenant tree (bootstrap and operators only: no API principal can create a root)."""
    values = clean_fields({"name": name, **fields})
    org_id = await repository.insert_org(tx, values, None)
    await audit.start_chain(tx, org_id)
    row = await repository.fetch(tx, org_id)
    audit.record(
        tx,
        actor,
        action="org.created",
        root_id=org_id,
        org_id=org_id,
        target_type="org",
        target_id=row.public_id,
        after=snapshot(row),
    )
    return row


async def create_child(
    tx: Tx,
    *,
    actor: Caller,
    parent_ref: str | int,
    fields: dict[str, Any],
    max_depth: int,
    allocations: dict[str, Any] | None = None,
) -> Any:
    """A new child; ``allocations`` ({meter: amount}) come from the parent's pool at once."""
    row, _ = await create_child_allocated(
        tx,
        actor=actor,
        parent_ref=parent_ref,
        fields=fields,
        max_depth=max_depth,
        allocations=allocations,
    )
    return row


async def create_child_allocated(
    tx: Tx,
    *,
    actor: Caller,
    parent_ref: str | int,
    fields: dict[str, Any],
    max_depth: int,
    allocations: dict[str, Any] | None = None,
) -> tuple[Any, list[allocation.Allocation]]:
    """``create_child``, with the allocations it made (the parent's balances after them)."""
    principal = actor.principal
    values = clean_fields(fields)
    if "name" not in values:
        raise InvalidInput.for_field("name", "is required")
    # The tree before the parent (the lock order every structural change follows).
    await lock_tree(tx, principal.root_id, shared=True)
    parent = await reach(
        tx.conn,
        principal,
        parent_ref,
        scope="orgs:write",
        capability="createOrganizations",
        lock="share",
    )
    if parent.status != "active":
        raise Conflict(
            f"organization {parent_ref!r} is {parent.status}; children can only be "
            "created under an active organization"
        )
    if parent.depth + 1 >= max_depth:
        raise Conflict(f"the tree may be at most {max_depth} levels deep")
    if values.get("mfa_required"):
        require_scope(principal, "orgs:write", "manageSignInPolicy")
    org_id = await repository.insert_org(tx, values, parent)
    row = await repository.fetch(tx, org_id)
    audit.record(
        tx,
        actor,
        action="org.created",
        root_id=row.root_id,
        org_id=row.id,
        target_type="org",
        target_id=row.public_id,
        after=snapshot(row),
    )
    given = []
    if allocations:
        require_scope(principal, "credits:write")
        given = await allocation.allocate_initial(tx, actor, parent, row, allocations)
    return row, given


async def update(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    changes: dict[str, Any],
    merge_settings: dict[str, Any] | None = None,
    if_match: str | None = None,
) -> Any:
    """Change an org's fields. ``merge_settings``' top-level keys are merged into the stored
    settings under the org's row lock (a surface that sends only the keys it changes: two such
    changes never lose each other's keys). A change of ``status`` is ``set_status``'s:
    deactivating returns the subtree's unused allocations, and keys stop (or start) working at
    once."""
    principal = actor.principal
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise InvalidInput.for_field(sorted(unknown)[0], "cannot be changed")
    values = clean_fields(changes)
    if values.get("status") == "deactivated":
        # Deactivating returns the subtree's unused allocations: a structural change, which
        # takes the tree before the org's row (as every structural change does), so that an
        # allocation holding the tree cannot wait for this row while this waits for the tree.
        await lock_tree(tx, principal.root_id)
    row = await reach(tx.conn, principal, org_ref, scope="orgs:write", lock="update")
    check_if_match(row, if_match)
    if merge_settings:
        values.update(clean_fields({"settings": {**(row.settings or {}), **merge_settings}}))
    if "status" in values and row.id == principal.org_id and values["status"] != "active":
        raise Conflict("a credential cannot disable or deactivate its own organization")
    if "status" in values and values["status"] != row.status:
        require_scope(principal, "orgs:write", "deactivateOrganizations")
    if "mfa_required" in values and values["mfa_required"] != row.mfa_required:
        # The switch that makes every member of the subtree sign in with a second factor:
        # owners only (core/people/mfa.py).
        require_scope(principal, "orgs:write", "manageSignInPolicy")
    if values.get("status") == "deactivated" and row.status != "deactivated":
        if row.parent_id is None:
            raise Conflict("the root of a tenant tree cannot be deactivated")
        subtree = [r for r in await repository.lock_subtree(tx, row.path) if r.deleted_at is None]
        await credits.release(tx, actor, subtree, await repository.fetch(tx, row.parent_id))
    if "status" in values and values["status"] != row.status:
        # A key is refused when its org is not active: cached lookups must not outlive this.
        tx.forget_keys()
    return await apply_changes(tx, actor, row, values)


async def set_status(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    status: str,
    if_match: str | None = None,
) -> Any:
    """Activate, disable or deactivate an org (the last returns its subtree's unused
    allocations to its parent); its keys follow at once in this process."""
    return await update(
        tx, actor=actor, org_ref=org_ref, changes={"status": status}, if_match=if_match
    )


async def update_subscription(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    meter: str,
    amount: int | None,
    settings_section: tuple[str, dict[str, Any]],
) -> Any:
    """A child's "subscription" as vendors see it, changed in one transaction: its allocation
    of ``meter`` from its own parent (None: unchanged) and one section of its settings, merged
    into what is stored under the org's row lock."""
    principal = actor.principal
    await lock_tree(tx, principal.root_id, shared=True)
    row = await reach(tx.conn, principal, org_ref, scope="credits:write", lock="update")
    if row.parent_id is None:
        raise Conflict(f"organization {row.public_id!r} is a root: it has no subscription")
    if amount is not None:
        parent = await reach(tx.conn, principal, row.parent_public_id, scope="credits:write")
        await allocation.allocate_reached(tx, actor, parent, row, meter, amount)
    name, changes = settings_section
    stored = (row.settings or {}).get(name)
    section = {**(stored if isinstance(stored, dict) else {}), **changes}
    if section == stored:
        return row
    require_scope(principal, "orgs:write")
    return await apply_changes(
        tx, actor, row, {"settings": {**(row.settings or {}), name: section}}
    )


async def apply_changes(tx: Tx, actor: Actor, row: Any, values: dict[str, Any]) -> Any:
    """Write already-checked field changes to a locked org row, with its audit entry."""
    before = snapshot(row)
    changed = {k: v for k, v in values.items() if before[k] != v}
    if not changed:
        return row
    await repository.write_fields(tx, row.id, changed)
    updated = await repository.fetch(tx, row.id)
    audit.record(
        tx,
        actor,
        action="org.updated",
        root_id=row.root_id,
        org_id=row.id,
        target_type="org",
        target_id=row.public_id,
        before={k: before[k] for k in changed},
        after=changed,
    )
    return updated


async def delete(
    tx: Tx, *, actor: Caller, org_ref: str | int, cascade: bool, refuse_in_use: bool = False
) -> list[Any]:
    """Soft-delete an org (and with ``cascade`` its live descendants); returns the deleted rows.
    With ``refuse_in_use``, an org in use (``in_use``) is refused (406) instead."""
    principal = actor.principal
    row = await reach(
        tx.conn, principal, org_ref, scope="orgs:write", capability="deactivateOrganizations"
    )
    if row.parent_id is None:
        raise Conflict("the root of a tenant tree cannot be deleted")
    if row.id == principal.org_id:
        raise Conflict("a credential cannot delete its own organization")
    await lock_tree(tx, row.root_id)
    # Again under the lock: a move or delete committed meanwhile may have changed its path or state.
    row = await reach(
        tx.conn,
        principal,
        org_ref,
        scope="orgs:write",
        capability="deactivateOrganizations",
        lock="update",
    )
    if refuse_in_use:
        # Under the tree lock: a child created meanwhile counts, and none can be created now.
        reasons = await in_use(tx.conn, row)
        if reasons:
            raise ConfirmationRequired(
                f"organization {org_ref!r} is in use ({', '.join(reasons)}); "
                "confirm the deletion to delete it and everything in it"
            )
    subtree = [r for r in await repository.lock_subtree(tx, row.path) if r.deleted_at is None]
    descendants = [r for r in subtree if r.id != row.id]
    if descendants and not cascade:
        raise Conflict(
            f"organization {org_ref!r} has {len(descendants)} descendant(s); "
            "delete them first or pass cascade=true",
        )
    await repository.mark_deleted(tx, row, with_descendants=bool(descendants))
    for gone in subtree:
        audit.record(
            tx,
            actor,
            action="org.deleted",
            root_id=row.root_id,
            org_id=gone.id,
            target_type="org",
            target_id=gone.public_id,
            after={"cascade_of": row.public_id} if gone.id != row.id else None,
        )
    await credits.release(tx, actor, subtree, await repository.fetch(tx, row.parent_id))
    # Keys of deleted orgs stop working now in this process, within the cache TTL elsewhere.
    tx.forget_keys()
    return subtree


async def in_use(conn: Reader, org: Any) -> list[str]:
    """Why deleting ``org`` would lose something: its live children, its members, and what it
    consumed this period (empty when nothing)."""
    reasons = []
    children, members = await repository.children_and_members(conn, org.id)
    if children:
        reasons.append(f"{children} child organization(s)")
    if members:
        reasons.append(f"{members} member(s)")
    consumed = await consumed_this_period(conn, [org])
    if any(consumed.values()):
        reasons.append("usage in the current period")
    return reasons


async def delete_confirmed(
    tx: Tx, *, actor: Caller, org_ref: str | int, confirmed: bool
) -> list[Any]:
    """Delete an org with its descendants; unless ``confirmed``, refuse (406) one in use."""
    return await delete(
        tx, actor=actor, org_ref=org_ref, cascade=confirmed, refuse_in_use=not confirmed
    )


async def restore(tx: Tx, *, actor: Caller, org_ref: str | int, window_days: int) -> Any:
    """Bring back a deleted org and what was deleted with it (not what it gave back)."""
    principal = actor.principal
    row = await reach(tx.conn, principal, org_ref, scope="orgs:write", include_deleted=True)
    if row.deleted_at is None:
        raise Conflict(f"organization {org_ref!r} is not deleted")
    if row.deleted_at + timedelta(days=window_days) < utcnow():
        raise Gone(f"organization {org_ref!r} was deleted more than {window_days} days ago")
    await lock_tree(tx, row.root_id)
    # Again under the lock: a concurrent restore or a move of an ancestor may have committed.
    row = await reach(
        tx.conn, principal, org_ref, scope="orgs:write", include_deleted=True, lock="update"
    )
    if row.deleted_at is None:
        raise Conflict(f"organization {org_ref!r} is not deleted")
    parent = await repository.fetch(tx, row.parent_id)
    if parent.deleted_at is not None:
        raise Conflict(f"restore the parent organization {parent.public_id!r} first")
    subtree = await repository.lock_subtree(tx, row.path)
    brought_back = [r for r in subtree if r.id == row.id or r.deleted_with == row.id]
    await repository.mark_restored(tx, [r.id for r in brought_back])
    for back in brought_back:
        audit.record(
            tx,
            actor,
            action="org.restored",
            root_id=row.root_id,
            org_id=back.id,
            target_type="org",
            target_id=back.public_id,
        )
    tx.forget_keys()
    return await repository.fetch(tx, row.id)


async def move(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    new_parent_ref: str | int,
    max_depth: int,
    if_match: str | None = None,
) -> Any:
    """Re-parent an org; every descendant's path and depth follow in the same transaction."""
    principal = actor.principal
    row = await reach(tx.conn, principal, org_ref, scope="orgs:write")
    if row.parent_id is None or row.id == principal.org_id:
        raise Conflict("this organization cannot be moved: it is the root of what you can reach")
    await lock_tree(tx, row.root_id)
    # Read both again now that the tree is locked: a move committed meanwhile may have changed them.
    row = await reach(tx.conn, principal, org_ref, scope="orgs:write", lock="update")
    check_if_match(row, if_match)
    new_parent = await reach(tx.conn, principal, new_parent_ref, scope="orgs:write", lock="update")
    if new_parent.path.startswith(row.path):
        raise Conflict("an organization cannot be moved under itself or one of its descendants")
    if new_parent.id == row.parent_id:
        return row
    if new_parent.status != "active":
        raise Conflict(
            f"organization {new_parent_ref!r} is {new_parent.status}; it cannot take children"
        )
    subtree = await repository.lock_subtree(tx, row.path)
    height = max(r.depth for r in subtree) - row.depth
    if new_parent.depth + 1 + height >= max_depth:
        raise Conflict(f"the move would make the tree deeper than {max_depth} levels")
    await credits.transfer(tx, actor, row, await repository.fetch(tx, row.parent_id), new_parent)
    await carry_subtree_usage(tx, row.id, row.path, new_parent.path)
    await repository.reparent(tx, row, new_parent)
    audit.record(
        tx,
        actor,
        action="org.moved",
        root_id=row.root_id,
        org_id=row.id,
        target_type="org",
        target_id=row.public_id,
        before={"parent_id": row.parent_public_id},
        after={"parent_id": new_parent.public_id},
    )
    # Reach is derived from paths on every request; cached principals are dropped all the same.
    tx.forget_keys()
    return await repository.fetch(tx, row.id)


__all__ = [
    "apply_changes",
    "check_if_match",
    "clean_name",
    "create_child",
    "create_child_allocated",
    "create_root",
    "delete",
    "delete_confirmed",
    "etag",
    "in_use",
    "move",
    "org_not_found",
    "require_scope",
    "restore",
    "set_status",
    "snapshot",
    "update",
    "update_subscription",
]
