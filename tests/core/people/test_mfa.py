"""Two-factor sign-in in the core: enrolment, sign-in with a code (replays refused, recovery
codes once), the lockout a wrong code counts toward, turning it off, the org switch and who may
set it, the seed sealed at rest, and two sign-ins racing with the same code.

The commands run in transactions of their own as the API runs them; codes are computed with
pyotp, as an authenticator app computes them. Races run on both databases; on PostgreSQL
(READ COMMITTED) they are real concurrent transactions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa

from orgplane.core.access.principal import Caller, RequestMeta
from orgplane.core.errors import Conflict, Forbidden, InvalidInput, OrgplaneError
from orgplane.core.orgs import service as org_service
from orgplane.core.people import auth, mfa, totp
from orgplane.core.people import users as user_service
from orgplane.models import audit_log, mfa_recovery_codes, users
from support.auth import PASSWORD, WRONG, insert_user, org_pk, user_row
from support.harness import Harness
from support.mfa import caller, code_at, code_now, policy_tree, session, set_user

META = RequestMeta(request_id="test", ip="127.0.0.1", user_agent="mfa-tests/1.0")
ROUNDS = 12


def _key(h: Harness) -> str:
    return h.services.settings.secret_key


async def _login(h: Harness, email: str, otp: str | None = None, **kw: Any) -> auth.LoginOutcome:
    return await auth.login(
        h.services.db,
        META,
        email,
        kw.pop("password", PASSWORD),
        kw.pop("org_ref", None),
        otp=otp,
        secret_key=kw.pop("secret_key", _key(h)),
    )


async def _actions(h: Harness, target_id: str) -> list[tuple[str, int, Any]]:
    async with h.services.db.read() as conn:
        rows = await conn.execute(
            sa.select(audit_log.c.action, audit_log.c.org_id, audit_log.c.after)
            .where(audit_log.c.target_id == target_id)
            .order_by(audit_log.c.id)
        )
        return [(r.action, r.org_id, r.after) for r in rows]


async def _enrolled(h: Harness, actor: Caller) -> tuple[str, list[str]]:
    enrolment = await h.services.db.transaction(
        mfa.begin_enrolment, actor=actor, secret_key=_key(h)
    )
    codes = await h.services.db.transaction(
        mfa.confirm_enrolment, actor=actor, code=code_now(enrolment.secret), secret_key=_key(h)
    )
    return enrolment.secret, codes


async def _raises(h: Harness, error: type[OrgplaneError], fn: Any, **kwargs: Any) -> Any:
    with pytest.raises(error) as caught:
        await h.services.db.transaction(fn, **kwargs)
    return caught.value


async def test_enrol_confirm_and_sign_in_with_a_code_once(h: Harness) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    user_pk = await insert_user(h, "ana@example.com", {root: ["standard"], child: ["standard"]})
    actor = await caller(h, await session(h, "ana@example.com"))
    public_id = (await user_row(h, user_pk)).public_id

    enrolment = await h.services.db.transaction(
        mfa.begin_enrolment, actor=actor, secret_key=_key(h)
    )
    assert enrolment.otpauth_uri.startswith("otpauth://totp/orgplane:ana%40example.com?")
    assert f"secret={enrolment.secret}" in enrolment.otpauth_uri
    assert enrolment.qr_svg.startswith("<svg") and enrolment.qr_svg.rstrip().endswith("</svg>")
    # Not in force until confirmed: sign-in needs no code yet.
    async with h.services.db.read() as conn:
        pending = await mfa.status(conn, principal=actor.principal)
    assert (pending.enabled, pending.enrolment_pending) == (False, True)
    assert (await _login(h, "ana@example.com")).ok

    # A code of another seed, or not a code at all, confirms nothing.
    other = pyotp.TOTP(pyotp.random_base32()).now()
    for code, message in ((other, "does not match"), ("12345", "6-digit")):
        error = await _raises(
            h, InvalidInput, mfa.confirm_enrolment, actor=actor, code=code, secret_key=_key(h)
        )
        assert error.errors[0].field == "code" and message in error.errors[0].message
    codes = await h.services.db.transaction(
        mfa.confirm_enrolment, actor=actor, code=code_now(enrolment.secret), secret_key=_key(h)
    )
    assert len(codes) == 10 == len(set(codes))
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    async with h.services.db.read() as conn:
        enabled = await mfa.status(conn, principal=actor.principal)
    assert (enabled.enabled, enabled.enrolment_pending, enabled.recovery_codes_left) == (
        True,
        False,
        10,
    )
    assert enabled.confirmed_at is not None and not enabled.required
    await _raises(h, Conflict, mfa.begin_enrolment, actor=actor, secret_key=_key(h))

    # Sign-in now needs a code. Missing: refused without counting a failure.
    missing = await _login(h, "ana@example.com")
    assert (missing.ok, missing.second_factor_required) == (False, True)
    assert (await user_row(h, user_pk)).failed_logins == 0
    # The code that confirmed the enrolment was used up by it.
    replayed = await _login(h, "ana@example.com", code_now(enrolment.secret))
    assert (replayed.ok, replayed.detail) == (False, "one-time code already used")
    assert replayed.second_factor_required
    # The next step's code passes (clock drift), once; spaces and a hyphen are forgiven.
    following = code_at(enrolment.secret, 1)
    typed = f"{following[:3]} {following[3:]}"
    assert (await _login(h, "ana@example.com", typed)).ok
    again = await _login(h, "ana@example.com", following)
    assert (again.ok, again.detail) == (False, "one-time code already used")
    # A wrong password with a code is a wrong password, nothing said of the code.
    wrong = await _login(h, "ana@example.com", code_at(enrolment.secret, 1), password=WRONG)
    assert (wrong.ok, wrong.second_factor_required, wrong.detail) == (False, False, "bad password")

    # Each member org gets the entries.
    root_pk, child_pk = (await org_pk(h, root)).id, (await org_pk(h, child)).id
    entries = await _actions(h, public_id)
    started = [(a, o) for a, o, _ in entries if a == "user.mfa_enrolment_started"]
    assert sorted(o for _, o in started) == sorted([root_pk, child_pk])
    confirmed = [after for a, _, after in entries if a == "user.mfa_enabled"]
    assert confirmed == [{"mfa_enabled": True, "method": "totp", "recovery_codes": 10}] * 2


async def test_a_recovery_code_signs_in_once_and_wrong_codes_lock_the_account(
    h: Harness,
) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "bo@example.com", {root: ["standard"]})
    actor = await caller(h, await session(h, "bo@example.com"))
    public_id = (await user_row(h, user_pk)).public_id
    _, codes = await _enrolled(h, actor)

    used = await _login(h, "bo@example.com", codes[0].upper())
    assert (used.ok, used.detail) == (True, "ok")
    assert (await _login(h, "bo@example.com", codes[0])).detail == auth.BAD_CODE
    assert (await user_row(h, user_pk)).failed_logins == 1
    recovery = [after for a, _, after in await _actions(h, public_id) if "recovery" in a]
    assert recovery == [{"recovery_codes_left": 9}]

    # Wrong codes count with wrong passwords toward the same lockout.
    await set_user(h, user_pk, failed_logins=0, failed_since=None)
    for detail in [auth.BAD_CODE] * 3:
        assert (await _login(h, "bo@example.com", "000000")).detail == detail
    assert (await _login(h, "bo@example.com", password=WRONG)).detail == "bad password"
    locking = await _login(h, "bo@example.com", "zzzzz-zzzzz")
    assert locking.detail == f"{auth.BAD_CODE}; {auth.ACCOUNT_LOCKED}"
    assert not locking.second_factor_required  # from now on the answer tells nothing
    locked = await _login(h, "bo@example.com", codes[1])
    assert (locked.ok, locked.detail, locked.second_factor_required) == (
        False,
        auth.ACCOUNT_LOCKED,
        False,
    )
    assert (await user_row(h, user_pk)).locked_at is not None
    assert [a for a, _, _ in await _actions(h, public_id)].count("user.locked") == 1


async def test_turning_off_and_new_recovery_codes_need_a_code(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "cy@example.com", {root: ["standard"]})
    actor = await caller(h, await session(h, "cy@example.com"))
    public_id = (await user_row(h, user_pk)).public_id
    await _raises(h, Conflict, mfa.disable, actor=actor, code="123456", secret_key=_key(h))
    secret, codes = await _enrolled(h, actor)

    # A wrong code is refused, and the failure it counts is committed.
    refused = await h.services.db.transaction(
        mfa.regenerate_recovery_codes, actor=actor, code="000000", secret_key=_key(h)
    )
    assert isinstance(refused, mfa.Refused)
    with pytest.raises(InvalidInput) as caught:
        mfa.settle(refused)
    assert caught.value.errors[0].field == "code"
    assert (await user_row(h, user_pk)).failed_logins == 1

    fresh = mfa.settle(
        await h.services.db.transaction(
            mfa.regenerate_recovery_codes, actor=actor, code=codes[0], secret_key=_key(h)
        )
    )
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    # The old codes are gone, used or not.
    assert (await _login(h, "cy@example.com", codes[1])).detail == auth.BAD_CODE
    async with h.services.db.read() as conn:
        stored = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(mfa_recovery_codes)
                .where(mfa_recovery_codes.c.user_id == user_pk)
            )
        ).scalar_one()
    assert stored == 10

    turned_off = await h.services.db.transaction(
        mfa.disable, actor=actor, code=code_at(secret, 1), secret_key=_key(h)
    )
    assert turned_off is None
    row = await user_row(h, user_pk)
    assert (row.totp_secret, row.totp_confirmed_at, row.totp_last_step) == (None, None, None)
    assert (await _login(h, "cy@example.com")).ok
    actions = [(a, after) for a, _, after in await _actions(h, public_id)]
    assert ("user.mfa_recovery_codes_regenerated", {"recovery_codes": 10}) in actions
    assert actions[-1] == ("user.mfa_disabled", {"mfa_enabled": False, "with": "totp"})


async def test_an_api_key_has_no_second_factor_to_manage(h: Harness) -> None:
    root = h.root.org_id
    await insert_user(h, "dee@example.com", {root: ["owner"]})
    token = await session(h, "dee@example.com")
    bound = await h.create_key(root, ["*"], key=token)  # bound to the user who made it
    for key in (h.root.api_key, bound):
        actor = await caller(h, key)
        await _raises(h, Forbidden, mfa.begin_enrolment, actor=actor, secret_key=_key(h))


async def test_the_org_switch_is_the_owners_and_forces_enrolment_in_its_subtree(
    h: Harness,
) -> None:
    tree = await policy_tree(h)
    region, team, sibling, member_pk = tree.region, tree.team, tree.sibling, tree.member_pk
    owner = await caller(h, await session(h, "owner@example.com"))
    admin = await caller(h, await session(h, "admin@example.com"))

    # Administrators lack manageSignInPolicy: their org's requirement is not theirs to change.
    await _raises(h, Forbidden, mfa.set_org_requirement, actor=admin, org_ref=region, required=True)
    # Through an org update too, and at creation.
    await _raises(
        h,
        Forbidden,
        org_service.update,
        actor=admin,
        org_ref=team,
        changes={"mfa_required": True},
    )
    await _raises(
        h,
        Forbidden,
        org_service.create_child,
        actor=admin,
        parent_ref=region,
        fields={"name": "New", "mfa_required": True},
        max_depth=10,
    )
    await _raises(
        h,
        InvalidInput,
        mfa.set_org_requirement,
        actor=owner,
        org_ref=region,
        required="yes",
    )
    row = await h.services.db.transaction(
        mfa.set_org_requirement, actor=owner, org_ref=region, required=True
    )
    assert row.mfa_required and row.version == 2
    entries = await _actions(h, region)
    assert entries[-1][0] == "org.updated" and entries[-1][2] == {"mfa_required": True}

    # A member signing in to the team (below the region) may only enrol; in the sibling, not.
    in_team = await _login(h, "member@example.com", org_ref=team)
    assert in_team.ok and in_team.mfa_enrolment_required
    in_sibling = await _login(h, "member@example.com", org_ref=sibling)
    assert in_sibling.ok and not in_sibling.mfa_enrolment_required
    actor = await caller(h, in_team.token or "")
    assert actor.principal.enrolment_only
    async with h.services.db.read() as conn:
        assert (await mfa.status(conn, principal=actor.principal)).required

    # Confirming lifts the session's restriction at once.
    secret, _ = await _enrolled(h, actor)
    h.services.keys.clear()
    assert not (await caller(h, in_team.token or "")).principal.enrolment_only
    # Turning it off is refused in a session of an org that requires it, allowed elsewhere.
    await _raises(
        h, Conflict, mfa.disable, actor=actor, code=code_at(secret, 1), secret_key=_key(h)
    )
    elsewhere = await _login(h, "member@example.com", code_at(secret, 1), org_ref=sibling)
    assert elsewhere.ok
    await set_user(h, member_pk, totp_last_step=None)
    sibling_actor = await caller(h, elsewhere.token or "")
    assert (
        await h.services.db.transaction(
            mfa.disable, actor=sibling_actor, code=code_now(secret), secret_key=_key(h)
        )
        is None
    )
    forced_again = await _login(h, "member@example.com", org_ref=team)
    assert forced_again.ok and forced_again.mfa_enrolment_required

    # Off again: no enrolment needed.
    await h.services.db.transaction(
        mfa.set_org_requirement, actor=owner, org_ref=region, required=False
    )
    assert not (await _login(h, "member@example.com", org_ref=team)).mfa_enrolment_required


async def test_the_seed_is_sealed_and_opens_only_with_the_servers_key(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "eve@example.com", {root: ["standard"]})
    actor = await caller(h, await session(h, "eve@example.com"))
    secret, codes = await _enrolled(h, actor)
    stored = (await user_row(h, user_pk)).totp_secret
    assert stored.startswith("v1.") and secret not in stored
    assert totp.open_sealed(stored, user_pk=user_pk, secret_key=_key(h)) == secret
    # Another user's row, or another key: it does not open.
    for kwargs in (
        {"user_pk": user_pk + 1, "secret_key": _key(h)},
        {"user_pk": user_pk, "secret_key": "x"},
    ):
        with pytest.raises(totp.SeedUnreadable):
            totp.open_sealed(stored, **kwargs)
    # A server whose secret key changed refuses the code without counting it against the user,
    # and still takes a recovery code (which needs no seed).
    rotated = await _login(h, "eve@example.com", code_at(secret, 1), secret_key="another key")
    assert (rotated.ok, rotated.detail) == (False, "two-factor seed unreadable")
    assert rotated.second_factor_required  # a recovery code would do
    assert (await user_row(h, user_pk)).failed_logins == 0
    assert (await _login(h, "eve@example.com", codes[0], secret_key="another key")).ok
    # Recovery codes are stored as hashes only.
    async with h.services.db.read() as conn:
        hashes = {
            r.code_hash
            for r in await conn.execute(
                sa.select(mfa_recovery_codes.c.code_hash).where(
                    mfa_recovery_codes.c.user_id == user_pk
                )
            )
        }
    assert hashes == {totp.recovery_hash(c) for c in codes}


async def test_an_administrator_turns_a_members_second_factor_off(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "fay@example.com", {root: ["standard"]})
    public_id = (await user_row(h, user_pk)).public_id
    actor = await caller(h, await session(h, "fay@example.com"))
    await _enrolled(h, actor)
    admin = await caller(h, h.root.api_key)
    member = await h.services.db.transaction(
        user_service.disable_mfa, admin, root, public_id, "fay@example.com"
    )
    assert member.row.mfa_enabled is False
    row = await user_row(h, user_pk)
    assert (row.totp_secret, row.totp_confirmed_at) == (None, None)
    assert (await _login(h, "fay@example.com")).ok
    async with h.services.db.read() as conn:
        left = await conn.execute(
            sa.select(mfa_recovery_codes).where(mfa_recovery_codes.c.user_id == user_pk)
        )
        assert left.first() is None
    entry = [e for e in await _actions(h, public_id) if e[0] == "user.mfa_disabled"][-1]
    assert entry[2] == {"mfa_enabled": False}


async def _race(h: Harness, email: str, user_pk: int, code: str, attempts: int) -> list[Any]:
    await set_user(h, user_pk, totp_last_step=None, failed_logins=0, failed_since=None)
    return list(await asyncio.gather(*(_login(h, email, code) for _ in range(attempts))))


async def test_sign_ins_racing_with_the_same_code_let_exactly_one_in(h: Harness) -> None:
    """Each round, several sign-ins send the same TOTP code (then the same recovery code) at
    once. The code is checked and used up under the user's row lock: exactly one passes, the
    others read the step (or the used code) it wrote."""
    root = h.root.org_id
    user_pk = await insert_user(h, "race@example.com", {root: ["standard"]})
    actor = await caller(h, await session(h, "race@example.com"))
    secret, codes = await _enrolled(h, actor)
    for i in range(ROUNDS):
        outcomes = await _race(h, "race@example.com", user_pk, code_now(secret), 3)
        passed = [o for o in outcomes if o.ok]
        assert len(passed) == 1, (i, [o.detail for o in outcomes])
        assert (
            sorted(o.detail for o in outcomes if not o.ok) == ["one-time code already used"] * 2
        ), i
    for i, code in enumerate(codes[:4]):
        outcomes = await _race(h, "race@example.com", user_pk, code, 3)
        assert [o.ok for o in outcomes].count(True) == 1, (i, [o.detail for o in outcomes])
    async with h.services.db.read() as conn:
        used = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(mfa_recovery_codes)
                .where(
                    mfa_recovery_codes.c.user_id == user_pk,
                    mfa_recovery_codes.c.used_at.is_not(None),
                )
            )
        ).scalar_one()
    assert used == 4


async def test_members_show_whether_their_second_factor_is_on(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "gil@example.com", {root: ["standard"]})
    public_id = (await user_row(h, user_pk)).public_id
    admin = (await caller(h, h.root.api_key)).principal
    async with h.services.db.read() as conn:
        before = await user_service.get_member(conn, admin, root, public_id)
    assert before.row.mfa_enabled is False and "totp_secret" not in before.row._fields
    await _enrolled(h, await caller(h, await session(h, "gil@example.com")))
    async with h.services.db.read() as conn:
        after = await user_service.get_member(conn, admin, root, public_id)
    assert after.row.mfa_enabled is True
    async with h.services.db.read() as conn:
        version = (
            await conn.execute(sa.select(users.c.version).where(users.c.id == user_pk))
        ).scalar_one()
    assert version == 2
