"""The organization tree: create, change, move, delete and restore, and its listings.

Every function that writes takes the transaction first and the acting principal second, checks
reach through ``access.service.reach`` and queues its audit entries on the transaction.

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

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Actor, Caller, Principal
from orgplane.core.access.service import ORG_COLUMNS, PARENT, org_not_found, reach, require_scope
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
from orgplane.core.ids import new_public_id, new_uuid
from orgplane.core.locks import lock_tree
from orgplane.core.orgs.validation import clean_fields, clean_name
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.core.usage.counters import carry_subtree_usage, consumed_this_period
from orgplane.db.engine import PreparedSelect, Reader, Tx, all_rows
from orgplane.models import memberships, org_tags, orgs
from orgplane.models.base import utcnow

# Upper bound of a subtree's range: every path character ("/", digits) sorts below "~".
_PATH_END = "~"
_parent = PARENT
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
)
UPDATABLE_FIELDS = frozenset(AUDITED_FIELDS)


def subtree_range(path: str) -> sa.ColumnElement[bool]:
    """The org at ``path`` and all its descendants: one range scan on the unique path index."""
    return sa.and_(orgs.c.path >= path, orgs.c.path < path + _PATH_END)


def descendants_range(path: str) -> sa.ColumnElement[bool]:
    return sa.and_(orgs.c.path > path, orgs.c.path < path + _PATH_END)


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


async def fetch(conn: Reader, org_id: int) -> Any:
    statement = (
        sa.select(*ORG_COLUMNS)
        .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
        .where(orgs.c.id == org_id)
    )
    return (await conn.execute(statement)).one()


async def _insert(tx: Tx, values: dict[str, Any], parent: Any | None) -> int:
    now = utcnow()
    row = {
        "uuid": new_uuid(),
        "public_id": new_public_id(),
        "parent_id": parent.id if parent is not None else None,
        "root_id": parent.root_id if parent is not None else 0,
        # A unique placeholder until the id is known.
        "path": f"new:{new_uuid()}",
        "depth": parent.depth + 1 if parent is not None else 0,
        "description": "",
        "status": "active",
        "deployment": parent.deployment if parent is not None else "us1",
        "timezone": parent.timezone if parent is not None else "UTC",
        "plan": "free",
        "settings": {},
        "tags": [],
        "customizations": {},
        "created_at": now,
        "modified_at": now,
        "version": 1,
        **values,
    }
    org_id: int = (await tx.execute(sa.insert(orgs).values(row).returning(orgs.c.id))).scalar_one()
    path = (parent.path if parent is not None else "/") + f"{org_id}/"
    fixes: dict[str, Any] = {"path": path}
    if parent is None:
        fixes["root_id"] = org_id
    await tx.execute(sa.update(orgs).where(orgs.c.id == org_id).values(fixes))
    if row["tags"]:
        await tx.execute(sa.insert(org_tags), [{"org_id": org_id, "tag": t} for t in row["tags"]])
    return org_id


async def create_root(tx: Tx, actor: Actor, *, name: str, **fields: Any) -> Any:
    """A new tenant tree (bootstrap and operators only: no API principal can create a root)."""
    values = clean_fields({"name": name, **fields})
    org_id = await _insert(tx, values, None)
    await audit.start_chain(tx, org_id)
    row = await fetch(tx, org_id)
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
    org_id = await _insert(tx, values, parent)
    row = await fetch(tx, org_id)
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
    if values.get("status") == "deactivated" and row.status != "deactivated":
        if row.parent_id is None:
            raise Conflict("the root of a tenant tree cannot be deactivated")
        subtree = [r for r in await _lock_subtree(tx, row.path) if r.deleted_at is None]
        await credits.release(tx, actor, subtree, await fetch(tx, row.parent_id))
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
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == row.id)
        .values(**changed, modified_at=utcnow(), version=orgs.c.version + 1)
    )
    if "tags" in changed:
        await tx.execute(sa.delete(org_tags).where(org_tags.c.org_id == row.id))
        if changed["tags"]:
            await tx.execute(
                sa.insert(org_tags), [{"org_id": row.id, "tag": t} for t in changed["tags"]]
            )
    updated = await fetch(tx, row.id)
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


async def _lock_subtree(tx: Tx, path: str) -> list[Any]:
    statement = sa.select(
        orgs.c.id,
        orgs.c.public_id,
        orgs.c.path,
        orgs.c.depth,
        orgs.c.deleted_at,
        orgs.c.deleted_with,
        orgs.c.parent_id,
        orgs.c.root_id,
        orgs.c.timezone,
        orgs.c.deployment,
        orgs.c.status,
    ).where(subtree_range(path))
    if tx.is_postgres:
        statement = statement.order_by(orgs.c.id).with_for_update()
    return list((await tx.execute(statement)).all())


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
    subtree = [r for r in await _lock_subtree(tx, row.path) if r.deleted_at is None]
    descendants = [r for r in subtree if r.id != row.id]
    if descendants and not cascade:
        raise Conflict(
            f"organization {org_ref!r} has {len(descendants)} descendant(s); "
            "delete them first or pass cascade=true",
        )
    now = utcnow()
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == row.id)
        .values(deleted_at=now, deleted_with=None, modified_at=now, version=orgs.c.version + 1)
    )
    if descendants:
        await tx.execute(
            sa.update(orgs)
            .where(descendants_range(row.path), orgs.c.deleted_at.is_(None))
            .values(
                deleted_at=now, deleted_with=row.id, modified_at=now, version=orgs.c.version + 1
            )
        )
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
    await credits.release(tx, actor, subtree, await fetch(tx, row.parent_id))
    # Keys of deleted orgs stop working now in this process, within the cache TTL elsewhere.
    tx.forget_keys()
    return subtree


async def in_use(conn: Reader, org: Any) -> list[str]:
    """Why deleting ``org`` would lose something: its live children, its members, and what it
    consumed this period (empty when nothing)."""
    reasons = []
    children = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(orgs)
            .where(orgs.c.parent_id == org.id, orgs.c.deleted_at.is_(None))
        )
    ).scalar_one()
    if children:
        reasons.append(f"{children} child organization(s)")
    members = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.org_id == org.id)
        )
    ).scalar_one()
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
    parent = await fetch(tx, row.parent_id)
    if parent.deleted_at is not None:
        raise Conflict(f"restore the parent organization {parent.public_id!r} first")
    subtree = await _lock_subtree(tx, row.path)
    brought_back = [r for r in subtree if r.id == row.id or r.deleted_with == row.id]
    now = utcnow()
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id.in_([r.id for r in brought_back]))
        .values(deleted_at=None, deleted_with=None, modified_at=now, version=orgs.c.version + 1)
    )
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
    return await fetch(tx, row.id)


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
    subtree = await _lock_subtree(tx, row.path)
    height = max(r.depth for r in subtree) - row.depth
    if new_parent.depth + 1 + height >= max_depth:
        raise Conflict(f"the move would make the tree deeper than {max_depth} levels")
    await credits.transfer(tx, actor, row, await fetch(tx, row.parent_id), new_parent)
    await carry_subtree_usage(tx, row.id, row.path, new_parent.path)
    new_path = f"{new_parent.path}{row.id}/"
    delta = new_parent.depth + 1 - row.depth
    await tx.execute(
        sa.update(orgs)
        .where(subtree_range(row.path))
        .values(
            path=sa.literal(new_path) + sa.func.substr(orgs.c.path, len(row.path) + 1),
            depth=orgs.c.depth + delta,
        )
    )
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == row.id)
        .values(parent_id=new_parent.id, modified_at=utcnow(), version=orgs.c.version + 1)
    )
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
    return await fetch(tx, row.id)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_cursor: str | None


_LIST_COLUMNS = (*orgs.c, _parent.c.public_id.label("parent_public_id"))


def _children_page(*conditions: sa.ColumnElement[bool]) -> PreparedSelect:
    return PreparedSelect(
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(
            orgs.c.parent_id == sa.bindparam("parent_id"), orgs.c.deleted_at.is_(None), *conditions
        )
        .order_by(orgs.c.id)
        .limit(sa.bindparam("limit"))
    )


_CHILDREN = _children_page()
_CHILDREN_AFTER = _children_page(orgs.c.id > sa.bindparam("after"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_children(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None = None,
    name: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> Page:
    parent = await reach(conn, principal, org_ref, scope="orgs:read")
    after = decode_cursor(cursor, int)
    if name is None and status is None and tag is None:
        # The common page, no filter: prepared, on the driver.
        prepared = _CHILDREN if after is None else _CHILDREN_AFTER
        params = {"parent_id": parent.id, "after": after[0] if after else 0, "limit": limit + 1}
        rows = await all_rows(conn, prepared, params)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more else None)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(orgs.c.parent_id == parent.id)
    )
    statement = _filters(statement, name=name, status=status, tag=tag)
    if after is not None:
        statement = statement.where(orgs.c.id > after[0])
    rows = list((await conn.execute(statement.order_by(orgs.c.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)


SUBTREE_SORTS = {
    "id": orgs.c.id,
    "name": sa.func.lower(orgs.c.name),
    "created_at": orgs.c.created_at,
}


async def list_subtree(
    conn: Reader,
    principal: Principal,
    *,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> list[Any]:
    """The principal's org and its live descendants, sorted and paged by offset (for surfaces
    whose clients page that way)."""
    top = await reach(conn, principal, principal.org_public_id, scope="orgs:read")
    if sort not in SUBTREE_SORTS:
        raise InvalidInput.for_field("sort", f"must be one of {', '.join(SUBTREE_SORTS)}")
    key = SUBTREE_SORTS[sort]
    order = (key.desc(), orgs.c.id.desc()) if descending else (key, orgs.c.id)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
        .where(subtree_range(top.path), orgs.c.deleted_at.is_(None))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())


async def list_descendants(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None = None,
    max_depth: int | None = None,
    name: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> Page:
    """Descendants in depth-first order (parents before children), paginated on the path."""
    top = await reach(conn, principal, org_ref, scope="orgs:read")
    after = decode_cursor(cursor, str)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(descendants_range(top.path))
    )
    statement = _filters(statement, name=name, status=status, tag=tag)
    if max_depth is not None:
        statement = statement.where(orgs.c.depth <= top.depth + max_depth)
    if after is not None:
        statement = statement.where(orgs.c.path > after[0])
    rows = list((await conn.execute(statement.order_by(orgs.c.path).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].path) if more else None)


def _filters(statement: Any, *, name: str | None, status: str | None, tag: str | None) -> Any:
    if status == "deleted":
        statement = statement.where(orgs.c.deleted_at.is_not(None))
    else:
        statement = statement.where(orgs.c.deleted_at.is_(None))
        if status is not None:
            statement = statement.where(orgs.c.status == status)
    if name:
        pattern = f"%{_escape_like(name.lower())}%"
        statement = statement.where(sa.func.lower(orgs.c.name).like(pattern, escape="\\"))
    if tag:
        statement = statement.where(
            sa.exists().where(org_tags.c.org_id == orgs.c.id, org_tags.c.tag == tag)
        )
    return statement


async def get_any(conn: Reader, principal: Principal, org_ref: str) -> Any:
    """An org the principal reaches, deleted ones included (for reads that must show them)."""
    return await reach(conn, principal, org_ref, scope="orgs:read", include_deleted=True)


__all__ = [
    "Page",
    "apply_changes",
    "check_if_match",
    "clean_name",
    "create_child",
    "create_child_allocated",
    "create_root",
    "delete",
    "delete_confirmed",
    "etag",
    "fetch",
    "get_any",
    "in_use",
    "list_children",
    "list_descendants",
    "list_subtree",
    "move",
    "org_not_found",
    "require_scope",
    "restore",
    "set_status",
    "snapshot",
    "subtree_range",
    "update",
    "update_subscription",
]
