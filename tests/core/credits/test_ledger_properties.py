"""Limits, allocations, usage and the ledger under hypothesis-generated sequences, both databases.

A hypothesis state machine drives, through the HTTP API, random sequences over a random tree:
root limits, creates (with and without initial allocations, some in another deployment, which
costs the parent a charge on ``credits``), allocations and re-allocations (refused ones too: off
the step, over the parent's pool, below what the child handed on plus consumed, no limit to give
from), usage (soft meters, and ``transfer`` made hard; repeated idempotency keys), deletes (with
and without cascade), deactivations, restores and moves (refused ones too). A plain Python model
keeps the expected balances (limit, allocated, charge) and what each org consumed this period; it
predicts every status code, and after every step the database, read directly, must match it and:

1. conserve: every org's ``allocated`` is the sum over its children of (amount + charge), no pool
   is negative, and the root's limit is every pool plus every charge;
2. a successful allocation never leaves the child below what it handed on plus consumed, nor the
   parent giving away what it consumed itself; on the hard meter no org ever holds less than that;
3. every amount (released and deleted orgs' included) is a multiple of its meter's step;
4. ``verify`` finds no disagreement, replaying the ledger gives every row's balances-after and the
   last row of each (org, meter) gives the stored balances; a refusal writes no ledger row;
5. deleting or deactivating returns the subtree's unused allocation: each org keeps only what it
   handed on plus consumed (rounded up to a step), its parent gets the rest.

The machine runs an event loop of its own (hypothesis drives synchronous code), as in
``test_tree_properties``; each example starts on an empty database.
"""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orgplane.models.base import utcnow
from support.harness import start_harness, stop_harness
from support.ledger_invariants import Bal, Stored, check_invariants, load, round_up
from support.tree_invariants import TreeModel, check_audit

MAX_DEPTH = 4  # small, so that creates and moves run into the cap


@dataclass(frozen=True)
class MeterModel:
    step: int
    hard: bool
    pct: int  # deployment charge, percent


# credits carries a deployment charge; transfer is hard and has a step, so that releases must
# round and hard limits meet allocations; operations is Make's 10,000-step soft meter.
METERS = {
    "credits": MeterModel(step=1, hard=False, pct=10),
    "operations": MeterModel(step=10_000, hard=False, pct=0),
    "transfer": MeterModel(step=1_000, hard=True, pct=0),
}
METER_CHANGES = {
    "credits": {"deployment_charge_pct": 10},
    "transfer": {"enforcement": "hard", "step": 1_000},
}
# How big things get, per meter: limits up to ~50 steps, usage up to a few steps a batch.
SCALE = {"credits": 2_000, "operations": 500_000, "transfer": 50_000}
USAGE = {"credits": 150, "operations": 25_000, "transfer": 6_000}

STEPS = {name: m.step for name, m in METERS.items()}
HARD = {name for name, m in METERS.items() if m.hard}


# --- the model -------------------------------------------------------------------------------


@dataclass
class OrgState:
    parent: str | None
    deployment: str
    deleted: bool = False
    deleted_with: str | None = None
    status: str = "active"


@dataclass
class Model(TreeModel):
    root: str
    orgs: dict[str, OrgState]
    order: list[str]  # creation order, for stable picking
    bal: dict[tuple[str, str], Bal] = field(default_factory=dict)
    consumed: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    keys: set[str] = field(default_factory=set)  # idempotency keys stored
    ledger_rows: int = 0

    # -- the tree

    # -- balances

    def charge(self, meter: str, parent: str, child: str, amount: int) -> int:
        pct = METERS[meter].pct
        if not pct or amount == 0 or self.orgs[parent].deployment == self.orgs[child].deployment:
            return 0
        return -(-amount * pct // 100)

    def free(self, org: str, meter: str) -> int:
        """What an org has neither handed on nor consumed (negative: soft overage)."""
        b = self.bal.get((org, meter), Bal())
        return b.amount - b.allocated - self.consumed[(org, meter)]

    # -- operations: each returns the status code and changes the model only on success

    def set_limit(self, meter: str, amount: int) -> int:
        if amount % METERS[meter].step:
            return 400
        current = self.bal.get((self.root, meter))
        held, had = (current.allocated, current.amount) if current else (0, 0)
        if amount < had and amount < held + self.consumed[(self.root, meter)]:
            return 409  # lowered below what it handed on plus consumed (raising is always fine)
        if current is not None and current.amount == amount:
            return 200
        self.bal[(self.root, meter)] = Bal(amount, held, 0)
        self.ledger_rows += 1
        return 200

    def allocate(self, parent: str, child: str, meter: str, amount: int) -> int:
        if self.orgs[parent].deleted or self.orgs[child].deleted:
            return 404
        if self.orgs[child].parent != parent:
            return 404
        if self.orgs[child].status == "deactivated":
            return 409  # its unused allocation went back when it was deactivated
        return self._allocate(parent, child, meter, amount)

    def _allocate(self, parent: str, child: str, meter: str, amount: int) -> int:
        if amount % METERS[meter].step:
            return 400
        pool = self.bal.get((parent, meter))
        if pool is None:
            return 409  # no limit to allocate from
        current = self.bal.get((child, meter), Bal())
        new_charge = self.charge(meter, parent, child, amount)
        delta = amount - current.amount
        need = delta + new_charge - current.charge
        if need > pool.amount - pool.allocated:
            return 409  # more than the parent's available pool
        if need > 0 and need > self.free(parent, meter):
            return 409  # the parent would give away what it consumed itself
        if delta < 0 and amount < current.allocated + self.consumed[(child, meter)]:
            return 409  # below what the child handed on plus consumed
        if delta == 0 and new_charge == current.charge:
            return 200
        pool.allocated += need
        self.bal[(child, meter)] = Bal(amount, current.allocated, new_charge)
        self.ledger_rows += 1
        return 200

    def create(
        self, org: str, parent: str, deployment: str | None, allocations: dict[str, int]
    ) -> int:
        if self.orgs[parent].deleted:
            return 404
        if self.orgs[parent].status != "active":
            return 409
        if self.depth(parent) + 1 >= MAX_DEPTH:
            return 409
        self.orgs[org] = OrgState(parent, deployment or self.orgs[parent].deployment)
        self.order.append(org)
        for meter in sorted(allocations):
            status = self._allocate(parent, org, meter, allocations[meter])
            if status != 200:
                return status  # the caller predicts on a copy: a failure leaves nothing behind
        return 201

    def ingest(self, org: str, meter: str, events: list[tuple[str, int]]) -> tuple[int, int]:
        """(status, accepted)."""
        if self.orgs[org].deleted:
            return 404, 0
        unique: dict[str, int] = {}
        for key, quantity in events:
            unique.setdefault(key, quantity)
        new = [(k, q) for k, q in unique.items() if k not in self.keys]
        if METERS[meter].hard:
            pool = self.bal.get((org, meter))
            available = pool.amount - pool.allocated if pool else 0
            running = self.consumed[(org, meter)]
            for _, quantity in new:
                running += quantity
                if quantity and running > available:
                    return 409, 0
        self.keys.update(k for k, _ in new)
        self.consumed[(org, meter)] += sum(q for _, q in new)
        return 200, len(new)

    def release(self, top: str) -> list[str]:
        """Deepest first, each live org of the subtree keeps what it handed on plus consumed,
        in whole steps, and gives the rest back to its parent. Returns the orgs released."""
        subtree = [o for o in self.subtree(top) if not self.orgs[o].deleted]
        for org in sorted(subtree, key=lambda o: -self.depth(o)):
            holder = self.orgs[org].parent
            assert holder is not None
            for meter in sorted(METERS):
                b = self.bal.get((org, meter))
                if b is None:
                    continue
                needed = round_up(b.allocated + self.consumed[(org, meter)], METERS[meter].step)
                keep = min(b.amount, needed)
                new_charge = self.charge(meter, holder, org, keep)
                if keep == b.amount and new_charge == b.charge:
                    continue
                self.bal[(holder, meter)].allocated += keep - b.amount + new_charge - b.charge
                b.amount, b.charge = keep, new_charge
                self.ledger_rows += 1
        return subtree

    def delete(self, org: str, cascade: bool) -> tuple[int, list[str]]:
        if self.orgs[org].deleted:
            return 404, []
        if self.orgs[org].parent is None:
            return 409, []
        live_descendants = [o for o in self.subtree(org)[1:] if not self.orgs[o].deleted]
        if live_descendants and not cascade:
            return 409, []
        released = self.release(org)
        for victim in self.subtree(org):
            state = self.orgs[victim]
            if victim == org:
                state.deleted, state.deleted_with = True, None
            elif not state.deleted:
                state.deleted, state.deleted_with = True, org
        return 200, released

    def restore(self, org: str) -> int:
        state = self.orgs[org]
        if not state.deleted:
            return 409
        assert state.parent is not None
        if self.orgs[state.parent].deleted:
            return 409
        for back in [state, *(o for o in self.orgs.values() if o.deleted_with == org)]:
            back.deleted, back.deleted_with = False, None
        return 200

    def set_status(self, org: str, status: str) -> tuple[int, list[str]]:
        if self.orgs[org].deleted:
            return 404, []
        if org == self.root and status != "active":
            return 409, []
        released: list[str] = []
        if status == "deactivated" and self.orgs[org].status != "deactivated":
            released = self.release(org)
        self.orgs[org].status = status
        return 200, released

    def move(self, org: str, new_parent: str) -> int:
        if self.orgs[org].deleted:
            return 404
        old_parent = self.orgs[org].parent
        if old_parent is None:
            return 409
        if self.orgs[new_parent].deleted:
            return 404
        subtree = self.subtree(org)
        if new_parent in subtree:
            return 409
        if old_parent == new_parent:
            return 200
        if self.orgs[new_parent].status != "active":
            return 409
        # Deleted descendants count: a restore must not break the cap either.
        height = max(self.depth(o) for o in subtree) - self.depth(org)
        if self.depth(new_parent) + 1 + height >= MAX_DEPTH:
            return 409
        # The allocations follow the org: the new parent's pool must take them over.
        moving: list[tuple[str, Bal, int]] = []
        for meter in sorted(METERS):
            b = self.bal.get((org, meter))
            if b is None or (b.amount == 0 and b.charge == 0):
                continue
            pool = self.bal.get((new_parent, meter))
            if pool is None:
                return 409
            new_charge = self.charge(meter, new_parent, org, b.amount)
            if b.amount + new_charge > min(
                pool.amount - pool.allocated, self.free(new_parent, meter)
            ):
                return 409
            moving.append((meter, b, new_charge))
        for meter, b, new_charge in moving:
            self.bal[(old_parent, meter)].allocated -= b.amount + b.charge
            self.bal[(new_parent, meter)].allocated += b.amount + new_charge
            b.charge = new_charge
            self.ledger_rows += 2
        self.orgs[org].parent = new_parent
        return 200


# --- the state machine -------------------------------------------------------------------------


def _ts() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


class LedgerMachine(RuleBasedStateMachine):
    """Drives the API with one event loop of its own; checks everything after every step."""

    new_database: Any = None  # set per database by the test

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.h = self.run(self._start())
        root = self.h.root.org_id
        self.model = Model(root, {root: OrgState(None, "us1")}, [root])
        self.created = 0
        self.keys_sent: list[str] = []
        self.dirty = False

    async def _start(self) -> Any:
        h = await start_harness(await self.new_database(), max_tree_depth=MAX_DEPTH)
        for name, change in METER_CHANGES.items():
            response = await h.client.patch(f"/meters/{name}", json=change, headers=h.auth())
            assert response.status_code == 200, response.text
        deployment = (await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())).json()
        assert deployment["deployment"] == "us1"
        return h

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self._finish())
        finally:
            self.loop.close()

    async def _finish(self) -> None:
        try:
            if not self.dirty:  # after a failed step the model is off: that failure is the news
                await self._check_reports()
                await check_audit(self.h.services.db)
        finally:
            # (The next example's database gets the meters as the migration seeds them.)
            await stop_harness(self.h)

    # -- helpers

    async def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.h.client.request(method, url, headers=self.h.auth(), **kwargs)
        assert response.status_code < 500, response.text
        return response

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        self.dirty = True  # until the checks after the step pass
        return self.run(self._send(method, url, **kwargs))

    def stored(self) -> Stored:
        return self.run(load(self.h.services.db))

    def amounts(self, data: st.DataObject, parent: str, child: str | None, meter: str) -> int:
        """An amount for a child's allocation: the boundaries the rules draw, and random ones."""
        m, model = METERS[meter], self.model
        step = m.step
        current = model.bal.get((child, meter), Bal()) if child else Bal()
        pool = model.bal.get((parent, meter), Bal())
        headroom = min(pool.amount - pool.allocated, model.free(parent, meter))
        floor = current.allocated + (model.consumed[(child, meter)] if child else 0)
        candidates = {
            0,
            current.amount,
            round_up(floor, step),
            max(0, round_up(floor, step) - step),
            current.amount + max(0, headroom) // step * step,  # all the parent can give
            current.amount + max(0, headroom) // step * step + step,  # one step too many
            current.amount + max(0, pool.amount - pool.allocated) // step * step,
        }
        if step > 1:
            candidates.add(current.amount + step // 2)  # off the step
        return data.draw(
            st.one_of(
                st.sampled_from(sorted(candidates)),
                st.integers(0, SCALE[meter] // step // 4).map(lambda k: k * step),
            ),
            label=f"amount of {meter}",
        )

    # -- rules

    @initialize(
        data=st.data(),
        meters_set=st.sets(st.sampled_from(sorted(METERS)), min_size=1),
    )
    def root_limits(self, data: st.DataObject, meters_set: set[str]) -> None:
        """Limits for the root and a first few children, so that every step has a tree to use."""
        for meter in sorted(meters_set):
            step = METERS[meter].step
            amount = data.draw(st.integers(0, SCALE[meter] // step), label=meter) * step
            self._set_limit(meter, amount)
        for _ in range(data.draw(st.integers(1, 3), label="children")):
            deployment = data.draw(st.sampled_from([None, "eu"]), label="deployment")
            self._create(data, self.model.root, deployment)
        # Each child uses part of what it got (or more: the meters are soft but transfer).
        for child, meter in self.holdings():
            amount = self.model.bal[(child, meter)].amount
            quantity = data.draw(st.integers(0, amount + amount // 4), label=f"{meter} used")
            key = f"k{len(self.keys_sent)}"
            self.keys_sent.append(key)
            self._consume(child, meter, [(key, quantity)], through_root=False)

    @rule(data=st.data(), meter=st.sampled_from(sorted(METERS)))
    def set_root_limit(self, data: st.DataObject, meter: str) -> None:
        step = METERS[meter].step
        current = self.model.bal.get((self.model.root, meter), Bal())
        floor = current.allocated + self.model.consumed[(self.model.root, meter)]
        amount = data.draw(
            st.one_of(
                st.sampled_from(
                    sorted({round_up(floor, step), max(0, round_up(floor, step) - step)})
                ),
                st.integers(0, SCALE[meter] // step).map(lambda k: k * step),
                st.integers(0, SCALE[meter]),  # mostly off the step of operations and transfer
            ),
            label="amount",
        )
        self._set_limit(meter, amount)

    def _set_limit(self, meter: str, amount: int) -> None:
        expected = self.model.set_limit(meter, amount)
        response = self.send(
            "PUT", f"/orgs/{self.model.root}/limits/{meter}", json={"amount": amount}
        )
        assert response.status_code == expected, (amount, response.text)
        if expected == 200:
            body = response.json()
            b = self.model.bal[(self.model.root, meter)]
            assert (body["limit"], body["allocated"], body["available"]) == (
                b.amount,
                b.allocated,
                b.amount - b.allocated,
            )

    @rule(data=st.data(), deployment=st.sampled_from([None, None, "eu", "us1"]))
    def create(self, data: st.DataObject, deployment: str | None) -> None:
        live = self.model.live()
        parent = data.draw(
            st.sampled_from(live if data.draw(st.integers(0, 9)) else self.model.order),
            label="parent",
        )
        self._create(data, parent, deployment)

    def _create(self, data: st.DataObject, parent: str, deployment: str | None) -> None:
        # Mostly meters the parent has a limit for: the others are refused before anything else.
        usable = sorted(m for m in METERS if (parent, m) in self.model.bal)
        mostly = data.draw(st.integers(0, 4), label="mostly") > 0
        some = usable if usable and mostly else sorted(METERS)
        chosen = data.draw(st.sets(st.sampled_from(some), max_size=3), label="meters")
        allocations = {m: self.amounts(data, parent, None, m) for m in sorted(chosen)}
        expected = copy.deepcopy(self.model).create("new", parent, deployment, allocations)
        self.created += 1
        body: dict[str, Any] = {"name": f"org {self.created}"}
        if deployment:
            body["deployment"] = deployment
        if allocations:
            body["allocations"] = allocations
        response = self.send("POST", f"/orgs/{parent}/children", json=body)
        assert response.status_code == expected, (allocations, response.text)
        if expected == 201:
            new = response.json()["id"]
            assert self.model.create(new, parent, deployment, allocations) == 201

    def pairs(self) -> list[tuple[str, str]]:
        """(live child, meter) whose parent has a limit to allocate from."""
        return [
            (child, meter)
            for child in self.model.live()[1:]
            for meter in sorted(METERS)
            if (self.model.orgs[child].parent, meter) in self.model.bal
        ]

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), meter=st.sampled_from(sorted(METERS)))
    def allocate_anything(self, data: st.DataObject, meter: str) -> None:
        """Any org below the root, any meter, now and then from an org that is not its parent."""
        child = data.draw(st.sampled_from(self.model.order[1:]), label="child")
        parent = self.model.orgs[child].parent
        assert parent is not None
        if data.draw(st.integers(0, 4)) == 0:
            parent = data.draw(st.sampled_from(self.model.order), label="some other parent")
        self._allocate(data, parent, child, meter)

    @precondition(lambda self: bool(self.pairs()))
    @rule(data=st.data())
    def allocate(self, data: st.DataObject) -> None:
        """A live child and a meter its parent has a limit for: the rules on amounts apply."""
        child, meter = data.draw(st.sampled_from(self.pairs()), label="child and meter")
        parent = self.model.orgs[child].parent
        assert parent is not None
        self._allocate(data, parent, child, meter)

    def holdings(self) -> list[tuple[str, str]]:
        """(live child, meter) the child holds an amount of."""
        return [
            (child, meter)
            for child, meter in self.pairs()
            if self.model.bal.get((child, meter), Bal()).amount > 0
        ]

    @precondition(lambda self: bool(self.holdings()))
    @rule(data=st.data())
    def lower(self, data: st.DataObject) -> None:
        """Take back part of a child's allocation: refused below what it handed on + consumed."""
        child, meter = data.draw(st.sampled_from(self.holdings()), label="child and meter")
        parent = self.model.orgs[child].parent
        assert parent is not None
        step = METERS[meter].step
        current = self.model.bal[(child, meter)]
        floor = current.allocated + self.model.consumed[(child, meter)]
        candidates = {0, round_up(floor, step), max(0, round_up(floor, step) - step)}
        amount = data.draw(
            st.one_of(
                st.sampled_from(sorted(a for a in candidates if a <= current.amount)),
                st.integers(0, current.amount // step).map(lambda k: k * step),
            ),
            label="amount",
        )
        self._send_allocation(parent, child, meter, amount)

    def _allocate(self, data: st.DataObject, parent: str, child: str, meter: str) -> None:
        self._send_allocation(parent, child, meter, self.amounts(data, parent, child, meter))

    def _send_allocation(self, parent: str, child: str, meter: str, amount: int) -> None:
        before = copy.deepcopy(self.model.bal)
        expected = self.model.allocate(parent, child, meter, amount)
        response = self.send(
            "PUT", f"/orgs/{parent}/children/{child}/allocations/{meter}", json={"amount": amount}
        )
        assert response.status_code == expected, (amount, response.text)
        if expected != 200:
            return
        body = response.json()
        pool, own = self.model.bal[(parent, meter)], self.model.bal.get((child, meter), Bal())
        assert body["new_child_limit"] == own.amount == amount
        assert body["parent"]["allocated"] == pool.allocated
        assert body["new_parent_available"] == pool.amount - pool.allocated
        assert body["diff"] == amount - before.get((child, meter), Bal()).amount
        assert body["deployment_charge"] == own.charge
        # 2., read back: a successful allocation leaves the child at least what it handed on
        # plus consumed when lowered, and the parent never gives away what it consumed.
        stored = self.stored()
        got, pool_got = stored.limits.get((child, meter), Bal()), stored.limits[(parent, meter)]
        if body["diff"] < 0:
            assert got.amount >= got.allocated + stored.consumed.get((child, meter), 0)
        if pool_got.allocated > before[(parent, meter)].allocated:
            assert pool_got.amount >= pool_got.allocated + stored.consumed.get((parent, meter), 0)

    @rule(
        data=st.data(),
        meter=st.sampled_from(sorted(METERS)),
        quantities=st.lists(st.integers(0, 1_000_000), min_size=1, max_size=3),
        through_root=st.booleans(),
    )
    def consume(
        self, data: st.DataObject, meter: str, quantities: list[int], through_root: bool
    ) -> None:
        # Mostly an org below the root with a limit for the meter: usage against a pool that
        # later allocations must respect, hard or soft.
        holders = [o for o in self.model.live()[1:] if (o, meter) in self.model.bal]
        mostly = data.draw(st.integers(0, 3), label="mostly") > 0
        some = holders if holders and mostly else self.model.order
        org = data.draw(st.sampled_from(some), label="org")
        events: list[tuple[str, int]] = []
        for quantity in quantities:
            if self.keys_sent and data.draw(st.integers(0, 3)) == 0:
                key = data.draw(st.sampled_from(self.keys_sent), label="repeated key")
            else:
                key = f"k{len(self.keys_sent)}"
                self.keys_sent.append(key)
            events.append((key, quantity % (USAGE[meter] + 1)))
        self._consume(org, meter, events, through_root)

    def _consume(
        self, org: str, meter: str, events: list[tuple[str, int]], through_root: bool
    ) -> None:
        expected, accepted = self.model.ingest(org, meter, events)
        payload: list[dict[str, Any]] = [
            {"meter": meter, "quantity": q, "timestamp": _ts(), "idempotency_key": k}
            for k, q in events
        ]
        path_org = org
        if through_root:
            path_org = self.model.root
            for event in payload:
                event["org_id"] = org
        response = self.send("POST", f"/orgs/{path_org}/usage", json={"events": payload})
        assert response.status_code == expected, (events, response.text)
        if expected == 200:
            assert response.json() == {
                "accepted": accepted,
                "duplicates": len(events) - accepted,
            }

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), cascade=st.booleans())
    def delete(self, data: st.DataObject, cascade: bool) -> None:
        org = data.draw(st.sampled_from(self.model.order[1:]), label="org")
        before = copy.deepcopy(self.model.bal)
        expected, released = self.model.delete(org, cascade)
        response = self.send("DELETE", f"/orgs/{org}", params={"cascade": str(cascade).lower()})
        assert response.status_code == expected, response.text
        if expected == 200:
            self._check_released(org, released, before)

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(
        data=st.data(), status=st.sampled_from(["active", "deactivated", "deactivated", "disabled"])
    )
    def set_status(self, data: st.DataObject, status: str) -> None:
        org = data.draw(st.sampled_from(self.model.order), label="org")
        before = copy.deepcopy(self.model.bal)
        expected, released = self.model.set_status(org, status)
        response = self.send("PATCH", f"/orgs/{org}", json={"status": status})
        assert response.status_code == expected, response.text
        if expected == 200:
            assert response.json()["status"] == status
            if released:
                self._check_released(org, released, before)

    def _check_released(self, top: str, released: list[str], before: dict[Any, Bal]) -> None:
        """5., read back: each released org keeps only what it handed on plus consumed, in whole
        steps (or what it had, if less); everything else went back up, to the top's parent."""
        stored = self.stored()
        parent = self.model.orgs[top].parent
        assert parent is not None
        for meter, m in METERS.items():
            returned = 0
            for org in released:
                if (org, meter) not in before:
                    continue
                got, had = stored.limits[(org, meter)], before[(org, meter)]
                needed = round_up(got.allocated + stored.consumed.get((org, meter), 0), m.step)
                assert got.amount == min(had.amount, needed), (org, meter, got, had)
                if org == top:
                    returned = had.amount + had.charge - got.amount - got.charge
            if (parent, meter) in before:
                pool = stored.limits[(parent, meter)]
                assert pool.allocated == before[(parent, meter)].allocated - returned, meter

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data(), deleted_one=st.booleans())
    def restore(self, data: st.DataObject, deleted_one: bool) -> None:
        pool = (self.model.deleted() if deleted_one else None) or self.model.order[1:]
        org = data.draw(st.sampled_from(pool), label="org")
        expected = self.model.restore(org)
        response = self.send("POST", f"/orgs/{org}/restore")
        assert response.status_code == expected, response.text

    @precondition(lambda self: len(self.model.order) > 1)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        org = data.draw(st.sampled_from(self.model.order[1:]), label="org")
        new_parent = data.draw(st.sampled_from(self.model.order), label="new_parent")
        expected = self.model.move(org, new_parent)
        response = self.send("POST", f"/orgs/{org}/move", json={"parent_id": new_parent})
        assert response.status_code == expected, response.text
        if expected == 200:
            assert response.json()["parent_id"] == new_parent

    async def _check_reports(self) -> None:
        """The API's own report agrees with the model, for every org (deleted ones in reach)."""
        for org in self.model.order:
            await self._check_report(org)

    async def _check_report(self, org: str) -> None:
        response = await self._send("GET", f"/orgs/{org}/credits")
        assert response.status_code == 200, response.text
        for row in response.json()["meters"]:
            meter = row["meter"]
            if meter not in METERS:
                continue
            b = self.model.bal.get((org, meter))
            used = self.model.consumed[(org, meter)]
            available = b.amount - b.allocated if b else None
            assert row == {
                **row,
                "limit": b.amount if b else None,
                "allocated": b.allocated if b else 0,
                "available": available,
                "deployment_charge": b.charge if b else 0,
                "consumed": used,
                "extra": max(0, used - available) if available is not None else 0,
                "step": METERS[meter].step,
                "enforcement": "hard" if METERS[meter].hard else "soft",
            }, (org, row)

    # -- after every step

    @invariant()
    def database_agrees(self) -> None:
        stored = self.stored()
        model = self.model
        assert {o: s.parent for o, s in model.orgs.items()} == stored.parent
        assert stored.limits == model.bal
        assert stored.consumed == {k: v for k, v in model.consumed.items() if v}
        # A refusal writes no ledger row; a success exactly the rows the model counts.
        assert len(stored.ledger) == model.ledger_rows
        check_invariants(stored, model.root, STEPS, HARD)
        self.dirty = False


def test_allocations_usage_and_tree_changes_keep_the_ledger_consistent(
    fresh_database: Any,
) -> None:
    machine = type("Machine", (LedgerMachine,), {"new_database": staticmethod(fresh_database)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
