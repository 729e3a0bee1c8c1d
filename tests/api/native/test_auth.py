"""Sign-in: login and sessions, lockout, timing, the access log, password resets and email
changes, on both databases, through the ASGI app.

Users are written directly with SQLAlchemy. Their passwords are hashed with cheap argon2
parameters (verification follows the parameters stored in the hash), which keeps the suite fast;
the timing test uses the application's real parameters.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.core.people import auth
from orgplane.models import (
    audit_log,
    membership_roles,
    metadata,
    user_tokens,
    users,
)
from orgplane.models.base import utcnow
from support.auth import (
    PASSWORD,
    UA,
    WRONG,
    bearer,
    insert_user,
    logged,
    org_pk,
    sign_in,
    user_row,
)
from support.harness import Harness


async def _set(h: Harness, table: Any, where: Any, **values: Any) -> None:
    async def run(tx: Any) -> None:
        await tx.execute(sa.update(table).where(where).values(**values))

    await h.services.db.transaction(run)


async def _audited(h: Harness, action: str) -> list[Any]:
    async with h.services.db.read() as conn:
        return list(
            (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action))).all()
        )


async def test_a_session_acts_with_the_users_capabilities_and_ends_at_once(h: Harness) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    user_pk = await insert_user(
        h, "Reader@Example.com", {root: ["read-only"], child: ["administrator"]}
    )

    response = await sign_in(h, "  reader@EXAMPLE.com ", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    token = body["token"]
    assert token.startswith("ops_") and body["token_type"] == "Bearer"
    assert body["org_id"] == root  # the first membership by default
    assert {o["id"] for o in body["orgs"]} == {root, child}
    assert body["user"]["email"] == "Reader@Example.com"

    # Read-only in root: reads pass, writes are refused by the capability check.
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(token))).status_code == 200
    patch = await h.client.patch(f"/orgs/{root}", json={"description": "x"}, headers=bearer(token))
    assert patch.status_code == 403, patch.text
    me = (await h.client.get("/me", headers=bearer(token))).json()
    assert me["org_id"] == root

    # The cheap test hash was upgraded to the application's parameters on success.
    row = await user_row(h, user_pk)
    assert not auth.needs_rehash(row.password_hash) and auth.verify_password(
        row.password_hash, PASSWORD
    )
    assert row.last_login_at is not None

    # A session in the child (administrator there) may write there, but not reach the root.
    child_token = (await sign_in(h, "reader@example.com", PASSWORD, org_id=child)).json()["token"]
    ok = await h.client.patch(
        f"/orgs/{child}", json={"description": "x"}, headers=bearer(child_token)
    )
    assert ok.status_code == 200, ok.text
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(child_token))).status_code == 404

    # A role change takes effect on the next request.
    await _set(
        h,
        membership_roles,
        sa.and_(membership_roles.c.user_id == user_pk, membership_roles.c.role == "administrator"),
        role="read-only",
    )
    again = await h.client.patch(
        f"/orgs/{child}", json={"description": "y"}, headers=bearer(child_token)
    )
    assert again.status_code == 403

    out = await h.client.post("/auth/logout", headers=bearer(token))
    assert out.status_code == 204, out.text
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(token))).status_code == 401
    assert (await h.client.post("/auth/logout", headers=bearer(token))).status_code == 401
    # The other session is untouched; an API key cannot "log out".
    assert (await h.client.get(f"/orgs/{child}", headers=bearer(child_token))).status_code == 200
    key_out = await h.client.post("/auth/logout", headers=h.auth())
    assert key_out.status_code == 400 and key_out.json()["errors"][0]["field"] == "authorization"
    assert (await h.client.post("/auth/logout")).status_code == 401

    # An expired session is refused (the key cache is dropped, as its short TTL would).
    await _set(h, user_tokens, user_tokens.c.user_id == user_pk, expires_at=utcnow())
    h.services.keys.clear()
    assert (await h.client.get(f"/orgs/{child}", headers=bearer(child_token))).status_code == 401


async def test_every_refusal_is_the_same_401(h: Harness) -> None:
    root = h.root.org_id
    other = (await h.create_org(root, "Other"))["id"]
    await insert_user(h, "ok@example.com", {root: ["standard"]})
    await insert_user(
        h, "pending@example.com", {root: ["standard"]}, status="pending", password=None
    )
    await insert_user(h, "disabled@example.com", {root: ["standard"]}, status="disabled")
    locked = await insert_user(h, "locked@example.com", {root: ["standard"]})
    await _set(h, users, users.c.id == locked, locked_at=utcnow())
    await insert_user(h, "orphan@example.com", {})

    refusals = [
        ("ok@example.com", WRONG),
        ("nobody@example.com", PASSWORD),
        ("pending@example.com", PASSWORD),
        ("disabled@example.com", PASSWORD),
        ("locked@example.com", PASSWORD),
        ("orphan@example.com", PASSWORD),
    ]
    bodies = []
    for email, password in refusals:
        response = await sign_in(h, email, password)
        assert response.status_code == 401, (email, response.text)
        body = response.json()
        bodies.append((body["title"], body["detail"]))
    assert len(set(bodies)) == 1
    assert "password" in bodies[0][1]

    # A correct password with an org the user is not in: a 400 naming org_id.
    wrong_org = await sign_in(h, "ok@example.com", PASSWORD, org_id=other)
    assert wrong_org.status_code == 400
    assert wrong_org.json()["errors"][0]["field"] == "org_id"
    # Bad input names the field, never a 500.
    for payload, field in [
        ({"email": "ok@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ok@example.com", "password": "x" * 300}, "password"),
        ({"email": "ok@example.com", "password": 12}, "password"),
        ({"email": "ok@example.com", "password": PASSWORD, "extra": 1}, "extra"),
    ]:
        response = await h.client.post("/auth/login", json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["errors"][0]["field"] == field
    assert (await h.client.post("/auth/login", content=b"{nope")).status_code == 400


async def test_five_failures_in_fifteen_minutes_lock_the_account(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "target@example.com", {root: ["administrator"]})
    for _ in range(4):
        assert (await sign_in(h, "target@example.com", WRONG)).status_code == 401
    assert (await user_row(h, user_pk)).locked_at is None
    assert (await sign_in(h, "target@example.com", WRONG)).status_code == 401
    row = await user_row(h, user_pk)
    assert row.locked_at is not None and row.failed_logins == 5

    refused = await sign_in(h, "target@example.com", PASSWORD)
    assert refused.status_code == 401 and refused.json()["detail"] == auth.LOGIN_REFUSED
    locks = await _audited(h, "user.locked")
    assert [(a.target_id, a.org_id) for a in locks] == [(row.public_id, (await org_pk(h, root)).id)]
    details = [e.detail for e in await logged(h, "LOGIN")]
    assert details == ["bad password"] * 4 + ["bad password; account locked", "account locked"]

    assert await h.services.db.transaction(auth.unlock_user, Actor.system("admin"), user_pk)
    assert len(await _audited(h, "user.unlocked")) == 1
    assert (await sign_in(h, "target@example.com", PASSWORD)).status_code == 200
    assert (await user_row(h, user_pk)).failed_logins == 0
    # Unlocking an unlocked user changes nothing and audits nothing.
    assert not await h.services.db.transaction(auth.unlock_user, Actor.system("admin"), user_pk)
    assert len(await _audited(h, "user.unlocked")) == 1


async def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(h: Harness) -> None:
    user_pk = await insert_user(h, "slow@example.com", {h.root.org_id: ["standard"]})
    for _ in range(4):
        await sign_in(h, "slow@example.com", WRONG)
    await _set(h, users, users.c.id == user_pk, failed_since=utcnow() - timedelta(minutes=16))
    await sign_in(h, "slow@example.com", WRONG)
    row = await user_row(h, user_pk)
    assert row.locked_at is None and row.failed_logins == 1
    # A success clears the count.
    assert (await sign_in(h, "slow@example.com", PASSWORD)).status_code == 200
    row = await user_row(h, user_pk)
    assert row.failed_logins == 0 and row.failed_since is None


async def test_concurrent_failures_are_counted_exactly(h: Harness) -> None:
    user_pk = await insert_user(h, "race@example.com", {h.root.org_id: ["standard"]})
    results = await asyncio.gather(*(sign_in(h, "race@example.com", WRONG) for _ in range(8)))
    assert [r.status_code for r in results] == [401] * 8
    row = await user_row(h, user_pk)
    assert row.failed_logins == 8 and row.locked_at is not None
    assert len(await _audited(h, "user.locked")) == 1


async def test_an_unknown_email_takes_as_long_as_a_known_one(h: Harness) -> None:
    # The application's real parameters here: the point is the argon2 work on both paths.
    await insert_user(
        h,
        "timed@example.com",
        {h.root.org_id: ["standard"]},
        password_hash=auth.hash_password(PASSWORD),
    )
    await sign_in(h, "warm@example.com", WRONG)  # builds the dummy hash once

    async def timed(email: str) -> float:
        start = time.perf_counter()
        assert (await sign_in(h, email, WRONG)).status_code == 401
        return time.perf_counter() - start

    known, unknown = [], []
    for _ in range(4):  # 4 failures: below the lockout, which would add a write
        known.append(await timed("timed@example.com"))
        unknown.append(await timed("nobody@example.com"))
    unknown.append(await timed("nobody@example.com"))
    k, u = statistics.median(known), statistics.median(unknown)
    assert k / 3 < u < k * 3, (known, unknown)


async def test_every_attempt_is_in_the_access_log_without_secrets(h: Harness) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    user_pk = await insert_user(h, "two@example.com", {root: ["standard"], child: ["read-only"]})
    root_pk, child_pk = (await org_pk(h, root)).id, (await org_pk(h, child)).id

    await sign_in(h, "two@example.com", WRONG)
    await sign_in(h, "ghost@example.com", WRONG)
    token = (await sign_in(h, "two@example.com", PASSWORD, org_id=child)).json()["token"]
    await h.client.post("/auth/logout", headers={**bearer(token), "User-Agent": UA})
    await h.client.post("/auth/logout", headers=bearer("ops_" + "x" * 38))

    logins = await logged(h, "LOGIN")
    summary = [(e.status, e.org_id, e.user_id, e.detail) for e in logins]
    assert summary == [
        ("FAILURE", root_pk, user_pk, "bad password"),
        ("FAILURE", child_pk, user_pk, "bad password"),
        ("FAILURE", None, None, "unknown user"),
        ("SUCCESS", child_pk, user_pk, None),
    ]
    assert all(e.user_agent == UA and e.ip and e.path == "/auth/login" for e in logins)
    assert logins[0].actor.startswith("user:") and logins[2].actor == "anonymous"
    logouts = await logged(h, "LOGOUT")
    assert [(e.status, e.org_id) for e in logouts] == [("SUCCESS", child_pk), ("FAILURE", None)]
    assert logouts[0].key_id == logins[3].key_id and logouts[0].key_id.startswith("ses_")
    # Requests made with the session are logged as such.
    await sign_in(h, "two@example.com", PASSWORD)
    session = (await sign_in(h, "two@example.com", PASSWORD)).json()["token"]
    await h.client.get(f"/orgs/{root}", headers=bearer(session))
    uses = await logged(h, "SESSION_AUTH")
    assert [(e.status, e.user_id, e.org_id) for e in uses] == [("SUCCESS", user_pk, root_pk)]

    # Issue the other kinds of token too, then scan every table for any secret.
    reset = await h.services.db.transaction(auth.issue_password_reset, Actor.system(), user_pk)
    change = await h.services.db.transaction(
        auth.request_email_change, Actor.system(), user_pk, "new@example.com"
    )
    secrets = [PASSWORD, WRONG, token, session, reset, change]
    async with h.services.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                text = repr(tuple(row))
                for secret in secrets:
                    assert secret not in text, (table.name, secret[:4])


async def test_password_reset_is_single_use_expires_and_ends_sessions(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "forgot@example.com", {root: ["standard"]})
    session = (await sign_in(h, "forgot@example.com", PASSWORD)).json()["token"]
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(session))).status_code == 200
    await _set(h, users, users.c.id == user_pk, failed_logins=3, failed_since=utcnow())

    token = await h.services.db.transaction(auth.issue_password_reset, Actor.system(), user_pk)
    assert token.startswith("opr_")
    new = "a brand new passphrase"
    for payload, field in [
        ({"token": token, "password": "short"}, "password"),
        ({"token": token, "password": "y" * 257}, "password"),
        ({"token": "opr_nonsense", "password": new}, "token"),
        ({"token": session, "password": new}, "token"),
        ({"password": new}, "token"),
    ]:
        response = await h.client.post("/auth/password/reset", json=payload)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == field

    done = await h.client.post("/auth/password/reset", json={"token": token, "password": new})
    assert done.status_code == 204, done.text
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(session))).status_code == 401
    assert (await sign_in(h, "forgot@example.com", PASSWORD)).status_code == 401
    assert (await sign_in(h, "forgot@example.com", new)).status_code == 200
    again = await h.client.post("/auth/password/reset", json={"token": token, "password": new})
    assert again.status_code == 400
    changed = await _audited(h, "user.password_changed")
    assert len(changed) == 1 and changed[0].actor.startswith("user:")
    assert len(await _audited(h, "user.password_reset_issued")) == 1

    # A newer token replaces an older one; an expired token does nothing.
    first = await h.services.db.transaction(auth.issue_password_reset, Actor.system(), user_pk)
    second = await h.services.db.transaction(auth.issue_password_reset, Actor.system(), user_pk)
    stale = await h.client.post("/auth/password/reset", json={"token": first, "password": PASSWORD})
    assert stale.status_code == 400
    await _set(
        h,
        user_tokens,
        user_tokens.c.kind == "password_reset",
        expires_at=utcnow() - timedelta(seconds=1),
    )
    expired = await h.client.post(
        "/auth/password/reset", json={"token": second, "password": PASSWORD}
    )
    assert expired.status_code == 400
    assert auth.verify_password((await user_row(h, user_pk)).password_hash, new)


async def test_email_change_is_confirmed_once(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "old@example.com", {root: ["standard"]})
    await insert_user(h, "taken@example.com", {root: ["standard"]})
    system = Actor.system()

    async def request(email: str) -> str:
        token: str = await h.services.db.transaction(
            auth.request_email_change, system, user_pk, email
        )
        return token

    for email, status in [("not an email", 400), ("TAKEN@example.com", 409)]:
        try:
            await request(email)
        except Exception as exc:  # the errors the endpoints render
            assert getattr(exc, "status", None) == status
            assert exc.errors[0].field == "new_email"  # type: ignore[attr-defined]
        else:
            raise AssertionError(f"{email!r} was accepted")

    token = await request("New@Example.com")
    assert token.startswith("ope_")
    assert (await h.client.post("/auth/email/confirm", json={"token": "ope_x"})).status_code == 400
    done = await h.client.post("/auth/email/confirm", json={"token": token})
    assert done.status_code == 200, done.text
    assert done.json()["email"] == "New@Example.com"
    row = await user_row(h, user_pk)
    assert (row.email, row.email_normalized) == ("New@Example.com", "new@example.com")
    assert (await sign_in(h, "new@example.com", PASSWORD)).status_code == 200
    assert (await sign_in(h, "old@example.com", PASSWORD)).status_code == 401
    assert (await h.client.post("/auth/email/confirm", json={"token": token})).status_code == 400
    changed = await _audited(h, "user.email_changed")
    assert [(c.before, c.after) for c in changed] == [
        ({"email": "old@example.com"}, {"email": "New@Example.com"})
    ]

    # Expired, and taken by someone else in the meantime.
    late = await request("later@example.com")
    await _set(h, user_tokens, user_tokens.c.kind == "email_change", expires_at=utcnow())
    assert (await h.client.post("/auth/email/confirm", json={"token": late})).status_code == 400
    raced = await request("raced@example.com")
    await insert_user(h, "raced@example.com", {root: ["standard"]})
    conflict = await h.client.post("/auth/email/confirm", json={"token": raced})
    assert conflict.status_code == 409
    assert (await user_row(h, user_pk)).email == "New@Example.com"
