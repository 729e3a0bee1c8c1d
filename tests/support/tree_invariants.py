"""Whole-tree invariants read straight from the database, shared by the tree property tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core.audit import service as audit
from orgplane.db.engine import Database
from orgplane.models import audit_log, orgs, usage_daily, usage_subtree_daily


@dataclass(frozen=True)
class Node:
    id: int
    public_id: str
    parent: str | None
    root_id: int
    path: str
    depth: int
    deleted: bool
    deleted_with: int | None
    status: str


async def load_tree(db: Database) -> dict[str, Node]:
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    orgs.c.id,
                    orgs.c.public_id,
                    orgs.c.parent_id,
                    orgs.c.root_id,
                    orgs.c.path,
                    orgs.c.depth,
                    orgs.c.deleted_at,
                    orgs.c.deleted_with,
                    orgs.c.status,
                )
            )
        ).all()
    public = {r.id: r.public_id for r in rows}
    return {
        r.public_id: Node(
            id=r.id,
            public_id=r.public_id,
            parent=public.get(r.parent_id) if r.parent_id is not None else None,
            root_id=r.root_id,
            path=r.path,
            depth=r.depth,
            deleted=r.deleted_at is not None,
            deleted_with=r.deleted_with,
            status=r.status,
        )
        for r in rows
    }


def check_structure(tree: dict[str, Node], *, max_depth: int) -> None:
    """Paths, depths and root ids agree with the parent links; no cycles; the depth cap holds."""
    by_id = {n.id: n for n in tree.values()}
    roots = [n for n in tree.values() if n.parent is None]
    assert roots, "no root"
    for root in roots:
        assert root.path == f"/{root.id}/", root
        assert root.depth == 0, root
        assert root.root_id == root.id, root
        assert not root.deleted, root
    paths = [n.path for n in tree.values()]
    assert len(set(paths)) == len(paths), "duplicate paths"
    for node in tree.values():
        if node.parent is not None:
            assert node.parent in tree, f"{node.public_id}: parent row missing"
            parent = tree[node.parent]
            assert node.path == f"{parent.path}{node.id}/", (node, parent)
            assert node.depth == parent.depth + 1, (node, parent)
            assert node.root_id == parent.root_id, (node, parent)
            # A live org never hangs below a deleted one.
            if not node.deleted:
                assert not parent.deleted, (node, parent)
        assert node.depth < max_depth, node
        # No cycle: walking up the parent links reaches a root in at most len(tree) steps,
        # through exactly the ancestors the path names.
        seen: list[int] = []
        walker: Node | None = node
        while walker is not None:
            assert walker.id not in seen, f"cycle through {node.public_id}"
            seen.append(walker.id)
            walker = tree[walker.parent] if walker.parent is not None else None
        assert "/" + "/".join(str(i) for i in reversed(seen)) + "/" == node.path, node
        if node.deleted_with is not None:
            # A cascade victim points at a deleted ancestor.
            assert node.deleted, node
            ancestor = by_id[node.deleted_with]
            assert ancestor.deleted, (node, ancestor)
            assert node.path.startswith(ancestor.path) and node.id != ancestor.id, node


async def check_audit(db: Database) -> int:
    """The audit chain verifies; returns how many entries it holds."""
    async with db.read() as conn:
        breaks = await audit.verify(conn)
        count = (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one()
    assert breaks == [], breaks
    return int(count)


async def audit_entries(db: Database) -> list[Any]:
    async with db.read() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(audit_log).order_by(audit_log.c.root_id, audit_log.c.seq)
                )
            ).all()
        )


async def check_subtree_usage(db: Database) -> dict[tuple[int, str, Any], int]:
    """Every org's ``usage_subtree_daily`` equals ``usage_daily`` summed over its subtree (deleted
    descendants included), row for row; zero rows count as absent. Returns the subtree sums."""
    async with db.read() as conn:
        paths = {r.id: r.path for r in await conn.execute(sa.select(orgs.c.id, orgs.c.path))}
        daily = (await conn.execute(sa.select(usage_daily))).all()
        stored = (await conn.execute(sa.select(usage_subtree_daily))).all()
    expected: dict[tuple[int, str, Any], int] = {}
    for row in daily:
        for part in paths[row.org_id].strip("/").split("/"):
            key = (int(part), row.meter, row.day)
            expected[key] = expected.get(key, 0) + int(row.quantity)
    actual = {(r.org_id, r.meter, r.day): int(r.quantity) for r in stored if r.quantity}
    assert actual == {k: q for k, q in expected.items() if q}
    return actual


class TreeModel:
    """Tree queries for the property tests' models: ``orgs`` maps an id to an object with
    ``parent`` and ``deleted``; ``order`` lists ids in creation order."""

    orgs: dict[str, Any]
    order: list[str]

    def depth(self, org: str) -> int:
        parent = self.orgs[org].parent
        return 0 if parent is None else self.depth(parent) + 1

    def subtree(self, org: str) -> list[str]:
        """The org and all its descendants, deleted ones included."""
        found = [org]
        for candidate in self.order:
            if self.orgs[candidate].parent == org:
                found.extend(self.subtree(candidate))
        return found

    def live(self) -> list[str]:
        return [o for o in self.order if not self.orgs[o].deleted]

    def deleted(self) -> list[str]:
        return [o for o in self.order if self.orgs[o].deleted]
