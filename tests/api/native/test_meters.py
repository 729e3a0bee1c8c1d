"""The meters API, end to end through the ASGI app, on SQLite and PostgreSQL.

Meters are installation-wide; any key may read them with meters:read, only a key of a tenant
root with meters:write may define or change one. Every definition and change is audited.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.ids import new_native_key
from orgplane.models import audit_log, meters, orgs
from support.harness import Harness
from support.problems import problem

PROBLEM = "application/problem+json"
BUILT_IN = {
    "credits": {"step": 1, "period": "month", "enforcement": "soft"},
    "operations": {"step": 10_000, "period": "month", "enforcement": "soft"},
    "transfer": {"step": 1, "period": "month", "enforcement": "soft"},
}


async def meter_rows(h: Harness) -> list[tuple[Any, ...]]:
    async with h.services.db.read() as conn:
        found = await conn.execute(sa.select(meters).order_by(meters.c.name))
        return [tuple(r) for r in found]


async def meter_audits(h: Harness) -> list[Any]:
    async with h.services.db.read() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(audit_log)
                    .where(audit_log.c.action.like("meter.%"))
                    .order_by(audit_log.c.id)
                )
            ).all()
        )


async def state(h: Harness) -> tuple[list[tuple[Any, ...]], int]:
    async with h.services.db.read() as conn:
        n_audit = (
            await conn.execute(sa.select(sa.func.count()).select_from(audit_log))
        ).scalar_one()
    return await meter_rows(h), int(n_audit)


async def root_pk(h: Harness) -> int:
    async with h.services.db.read() as conn:
        found = await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == h.root.org_id))
        return int(found.scalar_one())


# --- who may call what ---------------------------------------------------------------------


async def test_meter_endpoints_answer_401_403_404_and_succeed(h: Harness) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    reader = await h.create_key(root, ["meters:read"])
    no_meters = await h.create_key(root, ["orgs:write", "credits:write"])
    child_writer = await h.create_key(child, ["meters:write"])
    child_all = await h.create_key(child, ["*"])
    new = {"name": "seats", "unit": "seats"}
    before = await state(h)

    def calls(key: str | None, headers: dict[str, str] | None = None) -> list[Any]:
        auth = headers if headers is not None else h.auth(key)
        return [
            h.client.get("/meters", headers=auth),
            h.client.get("/meters/credits", headers=auth),
            h.client.post("/meters", json=new, headers=auth),
            h.client.patch("/meters/credits", json={"enforcement": "hard"}, headers=auth),
        ]

    # 401: no credentials, a malformed key, a well-formed key nobody issued.
    for headers in (
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {new_native_key()}"},
    ):
        for call in calls(None, headers):
            problem(await call, 401)

    # 403: reading needs meters:read, writing meters:write, and a key of a tenant root.
    for call in calls(no_meters):
        assert "meters:" in problem(await call, 403)["detail"]
    get_all, get_one, post, patch = calls(reader)
    assert (await get_all).status_code == 200 and (await get_one).status_code == 200
    for call in (post, patch):
        assert "meters:write" in problem(await call, 403)["detail"]
    for key in (child_writer, child_all):
        get_all, get_one, post, patch = calls(key)
        assert (await get_all).status_code == 200  # meters:write implies meters:read
        assert (await get_one).status_code == 200
        for call in (post, patch):
            assert "root" in problem(await call, 403)["detail"]

    # 404: a meter that does not exist, for reading and for changing.
    assert (
        "nosuch" in problem(await h.client.get("/meters/nosuch", headers=h.auth()), 404)["detail"]
    )
    response = await h.client.patch("/meters/nosuch", json={"unit": "x"}, headers=h.auth())
    problem(response, 404)
    assert await state(h) == before

    # The valid calls: the built-in meters, then a new one by the installation's first root.
    response = await h.client.get("/meters", headers=h.auth(reader))
    listed = {m["name"]: m for m in response.json()}
    assert set(BUILT_IN) <= set(listed)
    for name, expected in BUILT_IN.items():
        assert {k: listed[name][k] for k in expected} == expected
        assert listed[name]["deployment_charge_pct"] is None
    one = await h.client.get("/meters/operations", headers=h.auth(reader))
    assert one.json() == listed["operations"]
    response = await h.client.post("/meters", json=new, headers=h.auth())
    assert response.status_code == 201, response.text
    # Meters apply to every tenant: another tenant's root key may read them, not change them.
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    response = await h.client.post(
        "/meters", json={"name": "minutes", "unit": "min"}, headers=h.auth(other.api_key)
    )
    assert "first root" in problem(response, 403)["detail"]
    response = await h.client.patch(
        "/meters/credits", json={"deployment_charge_pct": 50}, headers=h.auth(other.api_key)
    )
    problem(response, 403)
    assert (await h.client.get("/meters/seats", headers=h.auth(other.api_key))).status_code == 200
    listed_after = [m["name"] for m in (await h.client.get("/meters", headers=h.auth())).json()]
    assert listed_after == sorted([*listed, "seats"])


# --- defining meters -----------------------------------------------------------------------


async def test_a_meter_is_defined_once_with_valid_fields(h: Harness) -> None:
    root = h.root.org_id
    response = await h.client.post(
        "/meters",
        json={
            "name": "gpu.hours",
            "unit": " hours ",
            "step": 5,
            "enforcement": "hard",
            "deployment_charge_pct": 7.5,
            "description": "Accelerator time",
        },
        headers={**h.auth(), "X-Request-Id": "req-meter-create"},
    )
    assert response.status_code == 201, response.text
    created = {
        "name": "gpu.hours",
        "unit": "hours",
        "step": 5,
        "period": "month",
        "enforcement": "hard",
        "deployment_charge_pct": 7.5,
        "description": "Accelerator time",
    }
    assert response.json() == created
    assert (await h.client.get("/meters/gpu.hours", headers=h.auth())).json() == created
    # The defaults.
    response = await h.client.post(
        "/meters", json={"name": "seats", "unit": "seats"}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "name": "seats",
        "unit": "seats",
        "step": 1,
        "period": "month",
        "enforcement": "soft",
        "deployment_charge_pct": None,
        "description": "",
    }
    (first, second) = await meter_audits(h)
    assert (first.action, first.target_type, first.target_id) == (
        "meter.created",
        "meter",
        "gpu.hours",
    )
    assert first.org_id == await root_pk(h) and first.after == created
    assert first.request_id == "req-meter-create"
    assert (second.action, second.target_id) == ("meter.created", "seats")

    # A new meter works at once: a root limit, and allocations in its steps.
    response = await h.client.put(
        f"/orgs/{root}/limits/gpu.hours", json={"amount": 100}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    child = (await h.create_org(root, "Child", allocations={"gpu.hours": 25}))["id"]
    response = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/gpu.hours",
        json={"amount": 27},
        headers=h.auth(),
    )
    problem(response, 400, "amount", "not_a_step_multiple")

    before = await state(h)
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"name": "seats", "unit": "seats"}, "duplicate"),
        ({"name": "Seats", "unit": "u"}, "name"),
        ({"name": "9lives", "unit": "u"}, "name"),
        ({"name": "with space", "unit": "u"}, "name"),
        ({"name": "", "unit": "u"}, "name"),
        ({"name": "x" * 65, "unit": "u"}, "name"),
        ({"name": 12, "unit": "u"}, "name"),
        ({"unit": "u"}, "name"),
        ({"name": "ok", "unit": ""}, "unit"),
        ({"name": "ok", "unit": "   "}, "unit"),
        ({"name": "ok", "unit": "u" * 33}, "unit"),
        ({"name": "ok", "unit": "u", "step": 0}, "step"),
        ({"name": "ok", "unit": "u", "step": -10}, "step"),
        ({"name": "ok", "unit": "u", "step": 2.5}, "step"),
        ({"name": "ok", "unit": "u", "step": 10**13}, "step"),
        ({"name": "ok", "unit": "u", "enforcement": "strict"}, "enforcement"),
        ({"name": "ok", "unit": "u", "period": "week"}, "period"),
        ({"name": "ok", "unit": "u", "deployment_charge_pct": 101}, "deployment_charge_pct"),
        ({"name": "ok", "unit": "u", "deployment_charge_pct": -1}, "deployment_charge_pct"),
        ({"name": "ok", "unit": "u", "colour": "red"}, "colour"),
    ]
    for body, field in refusals:
        response = await h.client.post("/meters", json=body, headers=h.auth())
        if field == "duplicate":
            assert "already exists" in problem(response, 409)["detail"]
        else:
            problem(response, 400, field)
        assert await state(h) == before, body


# --- changing meters -----------------------------------------------------------------------


async def test_a_meter_changes_with_its_audit_entry_and_keeps_limits_on_step(h: Harness) -> None:
    root = h.root.org_id
    response = await h.client.patch(
        "/meters/credits",
        json={"enforcement": "hard", "deployment_charge_pct": 12.5},
        headers={**h.auth(), "X-Request-Id": "req-meter-patch"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["enforcement"], body["deployment_charge_pct"], body["step"]) == ("hard", 12.5, 1)
    assert (await h.client.get("/meters/credits", headers=h.auth())).json() == body
    (entry,) = await meter_audits(h)
    assert (entry.action, entry.target_id, entry.request_id) == (
        "meter.updated",
        "credits",
        "req-meter-patch",
    )
    assert entry.before == {"enforcement": "soft", "deployment_charge_pct": None}
    assert entry.after == {"enforcement": "hard", "deployment_charge_pct": 12.5}

    # The same values again: nothing changes, nothing is audited. null clears the charge.
    response = await h.client.patch(
        "/meters/credits", json={"enforcement": "hard"}, headers=h.auth()
    )
    assert response.status_code == 200 and len(await meter_audits(h)) == 1
    response = await h.client.patch(
        "/meters/credits", json={"deployment_charge_pct": None}, headers=h.auth()
    )
    assert response.json()["deployment_charge_pct"] is None
    assert (await meter_audits(h))[-1].after == {"deployment_charge_pct": None}

    # A step change that would leave a limit off its steps is refused.
    response = await h.client.put(
        f"/orgs/{root}/limits/credits", json={"amount": 1_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    child = (await h.create_org(root, "Child", allocations={"credits": 250}))["id"]
    before = await state(h)
    for step in (100, 3, 7):
        response = await h.client.patch("/meters/credits", json={"step": step}, headers=h.auth())
        assert "credits" in problem(response, 409)["detail"]
        assert await state(h) == before
    response = await h.client.patch("/meters/credits", json={"step": 50}, headers=h.auth())
    assert response.status_code == 200, response.text
    assert (await meter_audits(h))[-1].after == {"step": 50}
    response = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/credits", json={"amount": 260}, headers=h.auth()
    )
    problem(response, 400, "amount", "not_a_step_multiple")
    response = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/credits", json={"amount": 300}, headers=h.auth()
    )
    assert response.status_code == 200, response.text

    # Operations: 10,000 allocated; 20,000 steps would leave it off-step.
    assert (
        await h.client.put(
            f"/orgs/{root}/limits/operations", json={"amount": 500_000}, headers=h.auth()
        )
    ).status_code == 200
    response = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/operations",
        json={"amount": 10_000},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    problem(
        await h.client.patch("/meters/operations", json={"step": 20_000}, headers=h.auth()), 409
    )

    before = await state(h)
    for body, field in (
        ({"name": "renamed"}, "name"),
        ({"period": "month"}, "period"),
        ({"step": 0}, "step"),
        ({"enforcement": "maybe"}, "enforcement"),
        ({"deployment_charge_pct": 100.5}, "deployment_charge_pct"),
        ({"unit": ""}, "unit"),
    ):
        response = await h.client.patch("/meters/credits", json=body, headers=h.auth())
        problem(response, 400, field)
        assert await state(h) == before, body
