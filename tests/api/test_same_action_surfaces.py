"""One action taken through each surface writes the same audit entries, apart from who and
where it came from: every surface calls the same core command.

Each surface acts on an org of its own, set up alike (same name, same allocations); the entries
it wrote are compared with the native API's after the fields that name the caller, the request
or the org (ids, actor, times, hashes) are put aside. Each entry names the surface it came
through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from orgplane.api.dialects.sumologic import limits as sumo_limits
from orgplane.core.ids import sumo_org_id
from orgplane.models import audit_log
from support.harness import Harness
from support.keys import dialect_key
from support.make import org_key

SUMO_HEADERS = {"parentDeploymentId": "us1"}
# What an entry says about the change itself (the rest names the caller, request and chain).
COMPARED = ("action", "target_type", "before", "after")


@pytest.fixture(autouse=True)
def relaxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sumo Logic's 4 requests per second per access key would slow the setup down."""
    monkeypatch.setattr(sumo_limits, "RATE", "10000/second")


async def _limits(h: Harness) -> None:
    for meter in ("operations", "credits"):
        response = await h.client.put(
            f"/orgs/{h.root.org_id}/limits/{meter}",
            json={"amount": 10_000_000},
            headers=h.auth(),
        )
        assert response.status_code == 200, response.text


async def _entries_since(h: Harness, seq: int) -> list[Any]:
    async with h.services.db.read() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(audit_log).where(audit_log.c.seq > seq).order_by(audit_log.c.seq)
                )
            ).all()
        )


async def _last_seq(h: Harness) -> int:
    async with h.services.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.max(audit_log.c.seq)))).scalar_one())


def _what(entries: list[Any], names: dict[str, str]) -> list[tuple[Any, ...]]:
    """The compared fields, with each surface's own org ids replaced by a role name."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, str):
            for public_id, role in names.items():
                value = value.replace(public_id, role)
        return value

    return [
        (*(plain(getattr(e, f)) for f in COMPARED), plain(e.target_id), e.actor.split(":")[0])
        for e in entries
    ]


Act = Callable[[Harness, str, str], Awaitable[httpx.Response]]
# The dialects' keys of the root, made before any action is timed (a key's creation is audited).
KEYS: dict[str, dict[str, Any]] = {}


async def _native_allocate(meter: str, h: Harness, parent: str, child: str) -> httpx.Response:
    return await h.client.put(
        f"/orgs/{parent}/children/{child}/allocations/{meter}",
        json={"amount": 50_000},
        headers=h.auth(),
    )


async def _make_allocate(h: Harness, parent: str, child: str) -> httpx.Response:
    token = KEYS["make"]["token"]
    return await h.client.patch(
        f"/make/api/v2/organizations/{await org_key(h, parent)}/managed-organizations/"
        f"{await org_key(h, child)}",
        json={"operations": 50_000},
        headers={"Authorization": f"Token {token}"},
    )


async def _sumologic_allocate(h: Harness, parent: str, child: str) -> httpx.Response:
    return await _sumologic_put(h, child, 50_000)


async def _sumologic_baselines(h: Harness, parent: str, child: str) -> None:
    """Sumo Logic's PUT also stores the subscription's baselines: store them first, so that the
    compared PUT changes the allocation alone."""
    response = await _sumologic_put(h, child, 20_000)
    assert response.status_code == 200, response.text


async def _sumologic_put(h: Harness, child: str, credits: int) -> httpx.Response:
    key = KEYS["sumologic"]
    return await h.client.put(
        f"/sumologic/api/v1/organizations/{sumo_org_id('us1', await org_key(h, child))}",
        json={"totalCreditsAllocated": credits},
        auth=httpx.BasicAuth(key["access_id"], key["access_key"]),
        headers=SUMO_HEADERS,
    )


async def _native_deactivate(h: Harness, parent: str, child: str) -> httpx.Response:
    return await h.client.patch(f"/orgs/{child}", json={"status": "deactivated"}, headers=h.auth())


async def _sumologic_deactivate(h: Harness, parent: str, child: str) -> httpx.Response:
    key = KEYS["sumologic"]
    return await h.client.delete(
        f"/sumologic/api/v1/organizations/{sumo_org_id('us1', await org_key(h, child))}",
        auth=httpx.BasicAuth(key["access_id"], key["access_key"]),
        headers=SUMO_HEADERS,
    )


async def _allocate_operations(h: Harness, parent: str, child: str) -> httpx.Response:
    return await _native_allocate("operations", h, parent, child)


async def _allocate_credits(h: Harness, parent: str, child: str) -> httpx.Response:
    return await _native_allocate("credits", h, parent, child)


# Each action: the native way, then the same through the other surfaces that offer it.
ACTIONS: dict[str, tuple[Act, list[Act]]] = {
    "allocate operations": (_allocate_operations, [_make_allocate]),
    "allocate credits": (_allocate_credits, [_sumologic_allocate]),
    "deactivate": (_native_deactivate, [_sumologic_deactivate]),
}

SURFACE: dict[Act, str] = {
    _allocate_operations: "api",
    _allocate_credits: "api",
    _native_deactivate: "api",
    _make_allocate: "make",
    _sumologic_allocate: "sumologic",
    _sumologic_deactivate: "sumologic",
}

PREPARE: dict[Act, Callable[[Harness, str, str], Awaitable[None]]] = {
    _sumologic_allocate: _sumologic_baselines,
}


@pytest.mark.parametrize("action", list(ACTIONS))
async def test_the_same_action_writes_the_same_audit_entries(h: Harness, action: str) -> None:
    await _limits(h)
    for kind in ("make", "sumologic"):
        KEYS[kind] = await dialect_key(h, h.root.org_id, kind)
    native, others = ACTIONS[action]
    seen = []
    for i, act in enumerate([native, *others]):
        parent = (
            await h.create_org(
                h.root.org_id,
                f"Parent {i}",
                allocations={"operations": 1_000_000, "credits": 1_000_000},
            )
        )["id"]
        child = (
            await h.create_org(
                parent, f"Child {i}", allocations={"operations": 20_000, "credits": 20_000}
            )
        )["id"]
        prepare = PREPARE.get(act)
        if prepare is not None:
            await prepare(h, parent, child)
        before = await _last_seq(h)
        response = await act(h, parent, child)
        assert response.status_code == 200, response.text
        entries = await _entries_since(h, before)
        assert entries, "the action wrote no audit entry"
        assert {e.surface for e in entries} == {SURFACE[act]}
        seen.append(_what(entries, {parent: "PARENT", child: "CHILD"}))
    expected = seen[0]
    for got in seen[1:]:
        assert got == expected
