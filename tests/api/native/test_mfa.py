"""Two-factor sign-in through the native API, on both databases: /me/mfa (enrol with a QR code,
confirm, recovery codes, turn off), POST /auth/login with `otp`, the org's `mfa_required`
switch and the sessions restricted to enrolment it makes, the access log without secrets.

Codes are computed with pyotp, as an authenticator app computes them.
"""

from __future__ import annotations

import sqlalchemy as sa

from orgplane.models import access_log, audit_log, metadata
from support.auth import PASSWORD, UA, WRONG, bearer, insert_user, logged, sign_in, user_row
from support.harness import Harness
from support.mfa import code_at, code_now, enrol, policy_tree, session, set_user
from support.problems import problem


async def test_enrol_confirm_and_sign_in_with_a_code(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "ana@example.com", {root: ["standard"]})
    token = await session(h, "ana@example.com")

    status = await h.client.get("/me/mfa", headers=bearer(token))
    assert status.status_code == 200, status.text
    assert status.json() == {
        "enabled": False,
        "confirmed_at": None,
        "enrolment_pending": False,
        "required": False,
        "recovery_codes_left": 0,
    }
    begun = await h.client.post("/me/mfa/enrol", headers=bearer(token))
    assert begun.status_code == 201, begun.text
    assert begun.headers["cache-control"] == "no-store"
    enrolment = begun.json()
    secret = enrolment["secret"]
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/orgplane:ana%40example.com?")
    assert enrolment["qr_svg"].startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert (await h.client.get("/me/mfa", headers=bearer(token))).json()["enrolment_pending"]

    for body, field in (
        ({}, "code"),
        ({"code": 123456}, "code"),
        ({"code": "1" * 33}, "code"),
        ({"code": "12345"}, "code"),
        ({"code": code_at(secret, 5)}, "code"),
        ({"code": code_now(secret), "extra": 1}, "extra"),
    ):
        refused = await h.client.post("/me/mfa/confirm", json=body, headers=bearer(token))
        problem(refused, 400, field)
    confirmed = await h.client.post(
        "/me/mfa/confirm", json={"code": code_now(secret)}, headers=bearer(token)
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10
    status = (await h.client.get("/me/mfa", headers=bearer(token))).json()
    assert status["enabled"] and status["confirmed_at"] and status["recovery_codes_left"] == 10
    again = await h.client.post("/me/mfa/enrol", headers=bearer(token))
    problem(again, 409)

    # The session that enrolled goes on; the user's shown with the second factor on.
    me = await h.client.get(f"/orgs/{root}/users", headers=bearer(token))
    assert [u["mfa_enabled"] for u in me.json()["data"]] == [True]

    # Without a code, after the right password: 401 saying a code is needed.
    needed = problem(
        await sign_in(h, "ana@example.com", PASSWORD), 401, code="second_factor_required"
    )
    assert "otp" in needed["detail"]
    # A wrong password answers as it always did, code or none.
    plain = problem(await sign_in(h, "nobody@example.com", PASSWORD), 401, code="unauthenticated")
    for password, otp in ((WRONG, None), (WRONG, code_at(secret, 1))):
        extra = {"otp": otp} if otp else {}
        wrong = problem(await sign_in(h, "ana@example.com", password, **extra), 401)
        assert (wrong["type"], wrong["title"], wrong["detail"]) == (
            plain["type"],
            plain["title"],
            plain["detail"],
        )
    await set_user(h, user_pk, failed_logins=0, failed_since=None)

    # The next time step's code (the enrolment spent the current one), sent twice: the replay
    # is the same string, even if the clock has moved on to another step since.
    next_code = code_at(secret, 1)
    signed_in = await sign_in(h, "ana@example.com", PASSWORD, otp=next_code)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["mfa_enrolment_required"] is False
    new_token = signed_in.json()["token"]
    assert (await h.client.get(f"/orgs/{root}", headers=bearer(new_token))).status_code == 200
    replayed = await sign_in(h, "ana@example.com", PASSWORD, otp=next_code)
    problem(replayed, 401, code="second_factor_required")
    # A recovery code, as shown or typed loosely, works once.
    typed = codes[0].replace("-", " ").upper()
    assert (await sign_in(h, "ana@example.com", PASSWORD, otp=typed)).status_code == 200
    problem(
        await sign_in(h, "ana@example.com", PASSWORD, otp=codes[0]),
        401,
        code="second_factor_required",
    )
    assert (await h.client.get("/me/mfa", headers=bearer(token))).json()["recovery_codes_left"] == 9
    for body, field in (({"otp": 12}, "otp"), ({"otp": "x" * 33}, "otp"), ({"otp": ""}, "otp")):
        response = await h.client.post(
            "/auth/login", json={"email": "ana@example.com", "password": PASSWORD, **body}
        )
        problem(response, 400, field)

    details = [(e.status, e.detail) for e in await logged(h, "LOGIN")]
    assert details == [
        ("SUCCESS", None),
        ("FAILURE", "second factor required"),
        ("FAILURE", "unknown user"),
        ("FAILURE", "bad password"),
        ("FAILURE", "bad password"),
        ("SUCCESS", None),
        ("FAILURE", "one-time code already used"),
        ("SUCCESS", None),
        ("FAILURE", "bad one-time code"),
    ]


async def test_wrong_codes_count_toward_the_lockout(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "bo@example.com", {root: ["standard"]})
    token = await session(h, "bo@example.com")
    secret, codes = await enrol(h, token)
    for _ in range(4):
        problem(
            await sign_in(h, "bo@example.com", PASSWORD, otp="000000"),
            401,
            code="second_factor_required",
        )
    # The fifth locks the account: from then on the answer is the plain one, whatever is sent.
    problem(await sign_in(h, "bo@example.com", PASSWORD, otp="000000"), 401, code="unauthenticated")
    problem(
        await sign_in(h, "bo@example.com", PASSWORD, otp=code_at(secret, 1)),
        401,
        code="unauthenticated",
    )
    assert (await user_row(h, user_pk)).locked_at is not None
    # A locked user's sessions stop too.
    problem(await h.client.get("/me/mfa", headers=bearer(token)), 401)
    details = [e.detail for e in await logged(h, "LOGIN")][-6:]
    assert details == ["bad one-time code"] * 4 + [
        "bad one-time code; account locked",
        "account locked",
    ]
    # An administrator unlocks; a recovery code still signs in.
    uid = (await user_row(h, user_pk)).public_id
    assert (
        await h.client.post(f"/orgs/{root}/users/{uid}/unlock", headers=h.auth())
    ).status_code == 200
    assert (await sign_in(h, "bo@example.com", PASSWORD, otp=codes[3])).status_code == 200


async def test_turning_off_and_replacing_recovery_codes(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "cy@example.com", {root: ["standard"]})
    token = await session(h, "cy@example.com")
    off = await h.client.request(
        "DELETE", "/me/mfa", json={"code": "123456"}, headers=bearer(token)
    )
    problem(off, 409)
    secret, codes = await enrol(h, token)

    wrong = await h.client.post(
        "/me/mfa/recovery_codes", json={"code": "000000"}, headers=bearer(token)
    )
    problem(wrong, 400, "code")
    assert (await user_row(h, user_pk)).failed_logins == 1  # committed with the refusal
    fresh = await h.client.post(
        "/me/mfa/recovery_codes", json={"code": codes[0]}, headers=bearer(token)
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["cache-control"] == "no-store"
    new_codes = fresh.json()["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    problem(
        await sign_in(h, "cy@example.com", PASSWORD, otp=codes[1]),
        401,
        code="second_factor_required",
    )

    for body, field in (({}, "code"), ({"code": None}, "code"), ({"code": "1", "x": 1}, "x")):
        bad = await h.client.request("DELETE", "/me/mfa", json=body, headers=bearer(token))
        problem(bad, 400, field)
    problem(
        await h.client.request("DELETE", "/me/mfa", json={"code": "999999"}, headers=bearer(token)),
        400,
        "code",
    )
    done = await h.client.request(
        "DELETE", "/me/mfa", json={"code": code_at(secret, 1)}, headers=bearer(token)
    )
    assert done.status_code == 204, done.text
    assert not (await h.client.get("/me/mfa", headers=bearer(token))).json()["enabled"]
    assert (await sign_in(h, "cy@example.com", PASSWORD)).status_code == 200
    audit = await h.client.get(
        f"/orgs/{root}/audit", params={"action": "user.mfa_disabled"}, headers=h.auth()
    )
    assert [e["after"] for e in audit.json()["data"]] == [{"mfa_enabled": False, "with": "totp"}]


async def test_keys_cannot_manage_a_second_factor_and_anonymous_calls_are_401(
    h: Harness,
) -> None:
    root = h.root.org_id
    await insert_user(h, "dee@example.com", {root: ["owner"]})
    token = await session(h, "dee@example.com")
    bound = await h.create_key(root, ["*"], key=token)
    calls = [
        ("GET", "/me/mfa", None),
        ("POST", "/me/mfa/enrol", None),
        ("POST", "/me/mfa/confirm", {"code": "123456"}),
        ("DELETE", "/me/mfa", {"code": "123456"}),
        ("POST", "/me/mfa/recovery_codes", {"code": "123456"}),
    ]
    for method, path, body in calls:
        for key in (h.root.api_key, bound):
            response = await h.client.request(method, path, json=body, headers=h.auth(key))
            assert "session" in problem(response, 403)["detail"]
        problem(await h.client.request(method, path, json=body), 401)


async def test_the_org_switch_forces_enrolment_in_the_subtree_only(h: Harness) -> None:
    root = h.root.org_id
    tree = await policy_tree(h)
    region, team, sibling = tree.region, tree.team, tree.sibling
    owner = await session(h, "owner@example.com")
    admin = await session(h, "admin@example.com")
    assert (await h.client.get(f"/orgs/{team}", headers=h.auth())).json()["mfa_required"] is False

    # Owners only: an administrator's session is refused, as is a key without orgs:write.
    refused = await h.client.patch(
        f"/orgs/{region}", json={"mfa_required": True}, headers=bearer(admin)
    )
    assert "manageSignInPolicy" in problem(refused, 403)["detail"]
    reader = await h.create_key(region, ["orgs:read"])
    problem(
        await h.client.patch(
            f"/orgs/{region}", json={"mfa_required": True}, headers=h.auth(reader)
        ),
        403,
    )
    problem(
        await h.client.patch(
            f"/orgs/{region}", json={"mfa_required": "yes"}, headers=bearer(owner)
        ),
        400,
        "mfa_required",
    )
    problem(await h.client.patch(f"/orgs/{region}", json={"mfa_required": True}), 401)
    elsewhere = (await h.create_org(root, "Elsewhere"))["id"]
    problem(
        await h.client.patch(
            f"/orgs/{elsewhere}", json={"mfa_required": True}, headers=bearer(owner)
        ),
        404,
    )
    switched = await h.client.patch(
        f"/orgs/{region}", json={"mfa_required": True}, headers=bearer(owner)
    )
    assert switched.status_code == 200, switched.text
    assert switched.json()["mfa_required"] is True
    audit = await h.client.get(
        f"/orgs/{region}/audit", params={"action": "org.updated"}, headers=h.auth()
    )
    assert audit.json()["data"][0]["after"] == {"mfa_required": True}

    # A member signing in to the team (under the region) may only enrol.
    forced = await sign_in(h, "member@example.com", PASSWORD, org_id=team)
    assert forced.status_code == 200, forced.text
    assert forced.json()["mfa_enrolment_required"] is True
    token = forced.json()["token"]
    for method, path in (
        ("GET", f"/orgs/{team}"),
        ("GET", "/me"),
        ("PATCH", f"/orgs/{team}"),
        ("GET", f"/orgs/{team}/users"),
        ("GET", "/sumologic/api/v1/users"),
    ):
        response = await h.client.request(method, path, json={}, headers=bearer(token))
        assert response.status_code == 403, (path, response.text)
        if not path.startswith("/sumologic"):
            body = problem(response, 403, code="mfa_enrolment_required")
            assert "requires two-factor sign-in" in body["detail"]
    assert (await h.client.get("/me/mfa", headers=bearer(token))).json()["required"] is True
    # In the sibling, no such rule.
    free = await sign_in(h, "member@example.com", PASSWORD, org_id=sibling)
    assert free.json()["mfa_enrolment_required"] is False
    free_token = free.json()["token"]
    assert (await h.client.get(f"/orgs/{sibling}", headers=bearer(free_token))).status_code == 200
    assert not (await h.client.get("/me/mfa", headers=bearer(free_token))).json()["required"]

    # Enrolling lifts the restriction of the session that did it, at once.
    secret, _ = await enrol(h, token)
    assert (await h.client.get(f"/orgs/{team}", headers=bearer(token))).status_code == 200
    # Then the code is needed everywhere, and turning it off is refused where it is required.
    problem(
        await sign_in(h, "member@example.com", PASSWORD, org_id=sibling),
        401,
        code="second_factor_required",
    )
    off = await h.client.request(
        "DELETE", "/me/mfa", json={"code": code_at(secret, 1)}, headers=bearer(token)
    )
    assert "requires two-factor" in problem(off, 409)["detail"]
    # Signing in to the team with a code opens a session that may do everything.
    again = await sign_in(h, "member@example.com", PASSWORD, org_id=team, otp=code_at(secret, 1))
    assert again.status_code == 200 and again.json()["mfa_enrolment_required"] is False


async def test_logout_ends_a_session_restricted_to_enrolment(h: Harness) -> None:
    org = (await h.create_org(h.root.org_id, "Strict"))["id"]
    response = await h.client.patch(f"/orgs/{org}", json={"mfa_required": True}, headers=h.auth())
    assert response.status_code == 200, response.text
    await insert_user(h, "new@example.com", {org: ["standard"]})
    forced = await sign_in(h, "new@example.com", PASSWORD)
    token = forced.json()["token"]
    assert forced.json()["mfa_enrolment_required"] is True
    assert (await h.client.post("/auth/logout", headers=bearer(token))).status_code == 204
    problem(await h.client.get("/me/mfa", headers=bearer(token)), 401)


async def test_no_secret_of_the_second_factor_is_stored_or_logged(h: Harness) -> None:
    root = h.root.org_id
    await insert_user(h, "eve@example.com", {root: ["standard"]})
    token = await session(h, "eve@example.com")
    secret, codes = await enrol(h, token)
    used = [code_at(secret, 1), "000000", codes[0], codes[1]]
    for otp in used:
        await h.client.post(
            "/auth/login",
            json={"email": "eve@example.com", "password": PASSWORD, "otp": otp},
            headers={"User-Agent": UA},
        )
    await h.client.post("/me/mfa/recovery_codes", json={"code": codes[2]}, headers=bearer(token))
    await h.services.access_log.flush()
    # Long secrets anywhere in the database; the 6-digit codes (which any timestamp or hash
    # may contain by chance) in what the logs write.
    secrets = [secret, *codes, *(c.replace("-", "") for c in codes), PASSWORD]
    async with h.services.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                text = repr(tuple(row))
                for value in secrets:
                    assert value not in text, (table.name, value[:3])
        logged = [
            repr((r.detail, r.path, r.user_agent))
            for r in await conn.execute(sa.select(access_log))
        ] + [repr((r.before, r.after)) for r in await conn.execute(sa.select(audit_log))]
    for code in (code_at(secret, 1), "000000"):
        assert not any(code in text for text in logged), code
