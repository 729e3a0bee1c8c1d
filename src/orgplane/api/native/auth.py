"""Sign-in endpoints: login and logout (sessions), and the token-completed password reset and
email change. Every login and logout attempt goes to the access log; no secret ever does."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from litestar import Request, Router, post
from litestar.params import JSONBody
from msgspec import Meta, Struct

from orgplane.api.deps import ServicesDep, limit_sign_in, refuse_authentication, request_meta
from orgplane.api.native.openapi import PublicOperation, problems
from orgplane.api.sign_in import OrgRef, record_sign_in
from orgplane.core.access.service import (
    authenticate,
    parse_authorization,
    session_key_id,
)
from orgplane.core.errors import InvalidInput, Unauthenticated
from orgplane.core.people import auth
from orgplane.core.people.errors import SecondFactorRequired

Token = Annotated[str, Meta(max_length=100)]


class LoginRequest(Struct, forbid_unknown_fields=True):
    email: Annotated[str, Meta(min_length=1, max_length=254)]
    password: Annotated[str, Meta(min_length=1, max_length=auth.PASSWORD_MAX)]
    org_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    otp: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=32,
                description="For a user with a second factor: the current code of their "
                "authenticator app, or one of their unused recovery codes",
            ),
        ]
        | None
    ) = None


class SessionUser(Struct):
    id: str
    email: str
    first_name: str
    last_name: str


class SessionOrg(Struct):
    id: str
    name: str


class LoginResponse(Struct):
    token: str
    token_type: str
    expires_at: datetime
    org_id: str
    user: SessionUser
    orgs: list[SessionOrg]
    mfa_enrolment_required: Annotated[
        bool,
        Meta(
            description="The organization requires a second factor the user has not enrolled: "
            "until POST /me/mfa/confirm the session may only use /me/mfa (everything else "
            "answers 403 `mfa_enrolment_required`)"
        ),
    ]


class PasswordResetRequest(Struct, forbid_unknown_fields=True):
    token: Token
    password: str


class EmailConfirmRequest(Struct, forbid_unknown_fields=True):
    token: Token


class EmailChanged(Struct):
    user_id: str
    email: str


@post(
    "/login",
    summary="Sign in",
    status_code=200,
    operation_class=PublicOperation,
    responses=problems(
        described={
            401: "Refused: the same problem for every reason (`unauthenticated`), except a "
            "correct password without a valid one-time code (`second_factor_required`)"
        }
    ),
    description="Returns a session token (`ops_...`, shown once) to send as "
    "`Authorization: Bearer <token>`; it acts in `org_id` (default: the user's first org) with "
    "the user's capabilities there, for 12 hours. Every refusal is the same 401 (problem type "
    "`unauthenticated`); 5 failures in 15 minutes lock the account.\n\n"
    "Two-factor sign-in: a user with a second factor also sends `otp`. Without it, or with a "
    "wrong or already used one, a correct password is answered 401 with the problem type "
    "`second_factor_required` (and only then: it does say the password was right); a wrong "
    "code counts as a failure toward the lockout. When `org_id` or an ancestor requires a "
    "second factor (`mfa_required`) and the user has none, the session opens with "
    "`mfa_enrolment_required: true` and may only enrol one (`/me/mfa`) until it is confirmed.",
)
async def login(
    request: Request[Any, Any, Any], data: JSONBody[LoginRequest], services: ServicesDep
) -> LoginResponse:
    await limit_sign_in(request, services)
    meta = request_meta(request)
    outcome = await auth.login(
        services.db,
        meta,
        data.email,
        data.password,
        data.org_id,
        otp=data.otp,
        secret_key=services.settings.secret_key,
    )
    if not outcome.ok:
        record_sign_in(
            services,
            request,
            meta,
            action="LOGIN",
            status="FAILURE",
            actor=f"user:{outcome.user_public_id}" if outcome.user_public_id else "anonymous",
            orgs=outcome.member_orgs,
            user_id=outcome.user_pk,
            detail=outcome.detail,
        )
        services.metrics.auth_failures.labels("login refused").inc()
        if outcome.bad_org:
            raise InvalidInput.for_field("org_id", "not one of your organizations")
        if outcome.second_factor_required:
            raise SecondFactorRequired(auth.SECOND_FACTOR_REQUIRED)
        raise Unauthenticated(auth.LOGIN_REFUSED)
    assert outcome.token is not None and outcome.session_pk is not None
    assert outcome.expires_at is not None
    user = outcome.user
    record_sign_in(
        services,
        request,
        meta,
        action="LOGIN",
        status="SUCCESS",
        actor=f"user:{user.public_id}",
        orgs=[outcome.org],
        user_id=user.id,
        key_id=session_key_id(outcome.session_pk),
    )
    return LoginResponse(
        token=outcome.token,
        token_type="Bearer",
        expires_at=outcome.expires_at,
        org_id=outcome.org.public_id,
        user=SessionUser(user.public_id, user.email, user.first_name, user.last_name),
        orgs=[
            SessionOrg(o.public_id, o.name)
            for o in outcome.member_orgs
            if o.status not in ("deactivated", "deleted")
        ],
        mfa_enrolment_required=outcome.mfa_enrolment_required,
    )


@post(
    "/logout",
    summary="Sign out",
    status_code=204,
    responses=problems(),
    description="Ends the calling session at once. API keys are revoked with "
    "`DELETE /orgs/{org_id}/api_keys/{key_id}` instead.",
)
async def logout(request: Request[Any, Any, Any], services: ServicesDep) -> None:
    meta = request_meta(request)
    secret = parse_authorization(request.headers.get("authorization"))
    result = await authenticate(services.db.read, services.keys, secret)
    principal = result.principal
    if principal is None or principal.kind != "session":
        org = OrgRef(result.org_id, result.root_id) if result.org_id is not None else None
        record_sign_in(
            services,
            request,
            meta,
            action="LOGOUT",
            status="FAILURE",
            actor=principal.label if principal else "anonymous",
            orgs=[org] if org else [],
            key_id=result.key_id,
            detail="not a session" if principal else result.reason,
        )
        if principal is not None:
            raise InvalidInput.for_field(
                "authorization", "logout ends a session (ops_...); revoke API keys instead"
            )
        raise await refuse_authentication(request, services, result.reason)
    await services.db.transaction(auth.logout, principal.key_pk)
    record_sign_in(
        services,
        request,
        meta,
        action="LOGOUT",
        status="SUCCESS",
        actor=principal.label,
        orgs=[OrgRef(principal.org_id, principal.root_id)],
        key_id=principal.key_id,
        user_id=principal.user_id,
    )


@post(
    "/password/reset",
    summary="Set a password with a reset token",
    status_code=204,
    operation_class=PublicOperation,
    responses=problems(),
    description="Completes a reset issued by an administrator: the token (valid 1 hour) works "
    "once; the password needs 12 to 256 characters. Every session of the user ends.",
)
async def reset_password(
    request: Request[Any, Any, Any], data: JSONBody[PasswordResetRequest], services: ServicesDep
) -> None:
    await limit_sign_in(request, services)
    auth.check_password_policy(data.password)
    async with services.db.read() as conn:
        await auth.check_password_reset_token(conn, data.token)
    new_hash = await asyncio.to_thread(auth.hash_password, data.password)
    await services.db.transaction(
        auth.complete_password_reset, request_meta(request), data.token, new_hash
    )


@post(
    "/email/confirm",
    summary="Confirm an email change",
    status_code=200,
    operation_class=PublicOperation,
    responses=problems(409),
    description="Applies the change the token (valid 24 hours, single use) was issued for.",
)
async def confirm_email(
    request: Request[Any, Any, Any], data: JSONBody[EmailConfirmRequest], services: ServicesDep
) -> EmailChanged:
    await limit_sign_in(request, services)
    user_id, email = await services.db.transaction(
        auth.confirm_email_change, request_meta(request), data.token
    )
    return EmailChanged(user_id=user_id, email=email)


router = Router(
    path="/auth",
    route_handlers=[login, logout, reset_password, confirm_email],
    tags=["sign-in"],
)
