"""Tree operations under hypothesis-generated sequences, on SQLite and PostgreSQL.

A hypothesis state machine drives creates, moves (valid and invalid: under itself, under a
descendant, past the depth cap, under a disabled or deleted org), deletes (with and without
cascade), restores and status changes through the HTTP API, each example on a fresh database. A
plain Python model of the tree predicts every status code; after every step the database must
agree with the model (parents, deleted flags and cascade links, statuses), satisfy the structural
invariants (paths, depths, root ids, no cycles, the depth cap), hold exactly the audit entries
the successful steps imply, and its audit chain must verify.

The machine runs an event loop of its own: the session loop of pytest-asyncio cannot be entered
once per step, and hypothesis drives synchronous code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from support.harness import run_in_thread, start_harness, stop_harness
from support.tree_invariants import TreeModel, check_audit, check_structure, load_tree

MAX_DEPTH = 4  # small, so that generated sequences run into the cap often


# --- the model -------------------------------------------------------------------------------


@dataclass
class ModelOrg:
    parent: str | None
    deleted: bool = False
    deleted_with: str | None = None
    status: str = "active"


class Model(TreeModel):
    def __init__(self, root: str) -> None:
        self.root = root
        self.orgs: dict[str, ModelOrg] = {root: ModelOrg(parent=None)}
        self.order: list[str] = [root]  # creation order, for stable picking

    # Each predict_* returns (status code, audit entries a success writes).

    def predict_create(self, parent: str) -> int:
        if self.orgs[parent].deleted:
            return 404
        if self.orgs[parent].status != "active":
            return 409
        if self.depth(parent) + 1 >= MAX_DEPTH:
            return 409
        return 201

    def predict_move(self, org: str, new_parent: str) -> tuple[int, int]:
        if self.orgs[org].deleted:
            return 404, 0
        if self.orgs[org].parent is None:
            return 409, 0
        if self.orgs[new_parent].deleted:
            return 404, 0
        subtree = self.subtree(org)
        if new_parent in subtree:
            return 409, 0
        if self.orgs[org].parent == new_parent:
            return 200, 0
        if self.orgs[new_parent].status != "active":
            return 409, 0
        # Deleted descendants count: a restore must not break the cap either.
        height = max(self.depth(o) for o in subtree) - self.depth(org)
        if self.depth(new_parent) + 1 + height >= MAX_DEPTH:
            return 409, 0
        return 200, 1

    def predict_delete(self, org: str, cascade: bool) -> tuple[int, int]:
        if self.orgs[org].deleted:
            return 404, 0
        if self.orgs[org].parent is None:
            return 409, 0
        live_descendants = [o for o in self.subtree(org)[1:] if not self.orgs[o].deleted]
        if live_descendants and not cascade:
            return 409, 0
        return 200, 1 + len(live_descendants)

    def predict_restore(self, org: str) -> tuple[int, int]:
        state = self.orgs[org]
        if not state.deleted:
            return 409, 0
        assert state.parent is not None
        if self.orgs[state.parent].deleted:
            return 409, 0
        return 200, 1 + sum(1 for o in self.orgs.values() if o.deleted_with == org)

    def predict_status(self, org: str, status: str) -> tuple[int, int]:
        if self.orgs[org].deleted:
            return 404, 0
        if org == self.root and status != "active":
            return 409, 0
        return 200, int(self.orgs[org].status != status)

    def apply_delete(self, org: str) -> None:
        for victim in self.subtree(org):
            state = self.orgs[victim]
            if victim == org:
                state.deleted, state.deleted_with = True, None
            elif not state.deleted:
                state.deleted, state.deleted_with = True, org

    def apply_restore(self, org: str) -> None:
        for state in [self.orgs[org], *(o for o in self.orgs.values() if o.deleted_with == org)]:
            state.deleted, state.deleted_with = False, None


# --- the state machine -------------------------------------------------------------------------


class TreeMachine(RuleBasedStateMachine):
    """Drives the API with one event loop of its own; checks everything after every step."""

    new_database: Any = None  # set per database by the test

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.h = self.run(self._start())
        self.model = Model(self.h.root.org_id)
        self.audit_count = self.run(check_audit(self.h.services.db))
        self.created = 0

    async def _start(self) -> Any:
        return await start_harness(await self.new_database(), max_tree_depth=MAX_DEPTH)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self._finish())
        finally:
            self.loop.close()

    async def _finish(self) -> None:
        try:
            await self._check_listing()
        finally:
            await stop_harness(self.h)

    def below_root(self) -> list[str]:
        return self.model.order[1:]

    # -- rules

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.model.live()), label="parent")
        expected = self.model.predict_create(parent)
        self.created += 1
        response = self.run(
            self.h.client.post(
                f"/orgs/{parent}/children",
                json={"name": f"org {self.created}"},
                headers=self.h.auth(),
            )
        )
        assert response.status_code == expected, response.text
        if expected == 201:
            body = response.json()
            assert body["parent_id"] == parent
            assert body["depth"] == self.model.depth(parent) + 1
            self.model.orgs[body["id"]] = ModelOrg(parent=parent)
            self.model.order.append(body["id"])
            self.audit_count += 1

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        org = data.draw(st.sampled_from(self.below_root()), label="org")
        new_parent = data.draw(st.sampled_from(self.model.order), label="new_parent")
        expected, written = self.model.predict_move(org, new_parent)
        response = self.run(
            self.h.client.post(
                f"/orgs/{org}/move", json={"parent_id": new_parent}, headers=self.h.auth()
            )
        )
        assert response.status_code == expected, response.text
        if expected == 200:
            self.model.orgs[org].parent = new_parent
            body = response.json()
            assert body["parent_id"] == new_parent
            assert body["depth"] == self.model.depth(org)
        self.audit_count += written

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), cascade=st.booleans())
    def delete(self, data: st.DataObject, cascade: bool) -> None:
        org = data.draw(st.sampled_from(self.below_root()), label="org")
        expected, written = self.model.predict_delete(org, cascade)
        response = self.run(
            self.h.client.delete(
                f"/orgs/{org}", params={"cascade": str(cascade).lower()}, headers=self.h.auth()
            )
        )
        assert response.status_code == expected, response.text
        if expected == 200:
            assert response.json() == {"message": "Organization deleted successfully"}
            self.model.apply_delete(org)
        self.audit_count += written

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), deleted_one=st.booleans())
    def restore(self, data: st.DataObject, deleted_one: bool) -> None:
        pool = (self.model.deleted() if deleted_one else None) or self.below_root()
        org = data.draw(st.sampled_from(pool), label="org")
        expected, written = self.model.predict_restore(org)
        response = self.run(self.h.client.post(f"/orgs/{org}/restore", headers=self.h.auth()))
        assert response.status_code == expected, response.text
        if expected == 200:
            self.model.apply_restore(org)
            assert response.json()["status"] == self.model.orgs[org].status
        self.audit_count += written

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), status=st.sampled_from(["active", "disabled"]))
    def set_status(self, data: st.DataObject, status: str) -> None:
        org = data.draw(st.sampled_from(self.below_root()), label="org")
        expected, written = self.model.predict_status(org, status)
        response = self.run(
            self.h.client.patch(f"/orgs/{org}", json={"status": status}, headers=self.h.auth())
        )
        assert response.status_code == expected, response.text
        if expected == 200:
            self.model.orgs[org].status = status
            assert response.json()["status"] == status
        self.audit_count += written

    # -- after every step

    @invariant()
    def database_agrees(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        db = self.h.services.db
        tree = await load_tree(db)
        check_structure(tree, max_depth=MAX_DEPTH)
        assert set(tree) == set(self.model.orgs)
        by_id = {n.id: n.public_id for n in tree.values()}
        for public_id, state in self.model.orgs.items():
            node = tree[public_id]
            actual = (
                node.parent,
                node.deleted,
                by_id.get(node.deleted_with) if node.deleted_with else None,
                node.status,
            )
            expected = (state.parent, state.deleted, state.deleted_with, state.status)
            assert actual == expected, public_id
        # Every success wrote exactly its entries, no refusal wrote any; the chain verifies.
        assert await check_audit(db) == self.audit_count

    async def _check_listing(self) -> None:
        """The API's own view: every live descendant once, parents before children."""
        listed: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            response = await self.h.client.get(
                f"/orgs/{self.h.root.org_id}/descendants", params=params, headers=self.h.auth()
            )
            assert response.status_code == 200, response.text
            page = response.json()
            listed.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        ids = [o["id"] for o in listed]
        assert sorted(ids) == sorted(self.model.live()[1:])
        for position, org in enumerate(listed):
            assert org["parent_id"] == self.model.orgs[org["id"]].parent
            assert org["parent_id"] == self.model.root or org["parent_id"] in ids[:position]


def test_tree_operations_keep_the_tree_consistent(fresh_database: Any) -> None:
    machine = type("Machine", (TreeMachine,), {"new_database": staticmethod(fresh_database)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_invalid_moves_are_refused_and_change_nothing(fresh_database: Any) -> None:
    """The named invalid moves, deterministically: itself, a descendant, past the cap, the root."""

    async def scenario() -> None:
        h = await start_harness(await fresh_database(), max_tree_depth=MAX_DEPTH)
        try:
            root = h.root.org_id
            a = (await h.create_org(root, "a"))["id"]
            b = (await h.create_org(a, "b"))["id"]
            c = (await h.create_org(b, "c"))["id"]  # depth 3: the deepest MAX_DEPTH allows
            d = (await h.create_org(root, "d"))["id"]
            e = (await h.create_org(d, "e"))["id"]
            before = await load_tree(h.services.db)
            audit_before = await check_audit(h.services.db)
            refused = [
                (a, a),  # under itself
                (a, b),  # under its child
                (a, c),  # under its grandchild
                (d, b),  # d+e is two levels: e would land at depth 4
                (e, c),  # under the deepest org
                (root, d),  # the root of what the key reaches
            ]
            for org, new_parent in refused:
                response = await h.client.post(
                    f"/orgs/{org}/move", json={"parent_id": new_parent}, headers=h.auth()
                )
                assert response.status_code == 409, (org, new_parent, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
            # Nor can the key delete or disable the root it stands on.
            response = await h.client.delete(f"/orgs/{root}?cascade=true", headers=h.auth())
            assert response.status_code == 409, response.text
            response = await h.client.patch(
                f"/orgs/{root}", json={"status": "disabled"}, headers=h.auth()
            )
            assert response.status_code == 409, response.text
            assert await load_tree(h.services.db) == before
            assert await check_audit(h.services.db) == audit_before
        finally:
            await stop_harness(h)

    run_in_thread(lambda: asyncio.run(scenario()))
