"""Two-factor helpers: codes computed the way an authenticator app does (pyotp), a user's
enrolment through the native API, the caller of a session for the core's commands, and the
state tests reset between rounds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pyotp
import sqlalchemy as sa

from orgplane.core.access.principal import Caller
from orgplane.core.access.service import authenticate
from orgplane.core.people.access import user_capabilities
from orgplane.models import users
from orgplane.models.base import utcnow
from support.auth import PASSWORD, bearer, insert_user, sign_in
from support.harness import Harness


def code_now(secret: str) -> str:
    """The code an authenticator app shows now for this seed."""
    return pyotp.TOTP(secret).now()


def code_at(secret: str, steps_from_now: int) -> str:
    """The code of the time step ``steps_from_now`` steps from the current one."""
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(utcnow()) + steps_from_now)


async def session(h: Harness, email: str, password: str = PASSWORD, **extra: Any) -> str:
    """A session token of a user who signs in successfully."""
    response = await sign_in(h, email, password, **extra)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def enrol(h: Harness, token: str) -> tuple[str, list[str]]:
    """Enrol an authenticator app through the API with this session: its seed and the
    recovery codes."""
    begun = await h.client.post("/me/mfa/enrol", headers=bearer(token))
    assert begun.status_code == 201, begun.text
    secret: str = begun.json()["secret"]
    confirmed = await h.client.post(
        "/me/mfa/confirm", json={"code": code_now(secret)}, headers=bearer(token)
    )
    assert confirmed.status_code == 200, confirmed.text
    codes: list[str] = confirmed.json()["recovery_codes"]
    return secret, codes


async def caller(h: Harness, secret: str) -> Caller:
    """The caller a session or key makes, as the API hands it to the core's commands (a
    user's with the capabilities of their roles in its org)."""
    result = await authenticate(h.services.db.read, h.services.keys, secret)
    principal = result.principal
    assert principal is not None, result.reason
    if principal.user_id is not None:
        async with h.services.db.read() as conn:
            held = await user_capabilities(conn, principal.user_id, principal.org_id)
        principal = replace(principal, capabilities=held)
    return Caller.of(principal)


async def set_user(h: Harness, user_pk: int, **values: Any) -> None:
    async def run(tx: Any) -> None:
        await tx.execute(sa.update(users).where(users.c.id == user_pk).values(**values))

    await h.services.db.transaction(run)


@dataclass(frozen=True)
class PolicyTree:
    """Root > Region > Team, and Root > Sibling. owner@ owns the region, admin@ administers it;
    member@ is a standard member of the team and of the sibling."""

    region: str
    team: str
    sibling: str
    member_pk: int


async def policy_tree(h: Harness) -> PolicyTree:
    root = h.root.org_id
    region = (await h.create_org(root, "Region"))["id"]
    team = (await h.create_org(region, "Team"))["id"]
    sibling = (await h.create_org(root, "Sibling"))["id"]
    await insert_user(h, "owner@example.com", {region: ["owner"]})
    await insert_user(h, "admin@example.com", {region: ["administrator"]})
    member_pk = await insert_user(
        h, "member@example.com", {team: ["standard"], sibling: ["standard"]}
    )
    return PolicyTree(region, team, sibling, member_pk)
