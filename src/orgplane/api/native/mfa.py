"""The signed-in user's second factor: its state, enrolment (QR code rendered on the server),
recovery codes, turning it off. A session restricted to enrolment (its org requires a second
factor) may use these endpoints and nothing else; an API key may use none of them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from litestar import Router, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.params import JSONBody
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep, provide_enrolling_principal
from orgplane.api.native.openapi import problems
from orgplane.core.people import mfa

# Responses that carry a secret shown once: no cache may keep them.
NO_STORE = CacheControlHeader(no_store=True)
_FORBIDDEN = {403: "An API key (a second factor is a signed-in person's)"}


class MfaStatus(Struct):
    enabled: Annotated[bool, Meta(description="Sign-in needs a one-time code")]
    confirmed_at: datetime | None
    enrolment_pending: Annotated[
        bool, Meta(description="A seed was issued (POST /me/mfa/enrol) and awaits confirmation")
    ]
    required: Annotated[
        bool,
        Meta(description="The session's organization, or an ancestor, requires a second factor"),
    ]
    recovery_codes_left: Annotated[int, Meta(description="Unused recovery codes")]


class MfaEnrolment(Struct):
    """Shown once. Scan ``qr_svg`` or type ``secret`` into an authenticator app, then confirm
    with the code it shows."""

    secret: Annotated[
        str, Meta(description="The TOTP seed, base32, for typing it into the app by hand")
    ]
    otpauth_uri: Annotated[str, Meta(description="The `otpauth://totp/...` URI the QR code holds")]
    qr_svg: Annotated[
        str, Meta(description="The URI as a QR code: an SVG document, rendered by orgplane")
    ]


class MfaCode(Struct, forbid_unknown_fields=True):
    code: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=32,
            description="The current code of the authenticator app (6 digits), or, except to "
            "confirm an enrolment, one of the unused recovery codes",
        ),
    ]


class RecoveryCodes(Struct):
    recovery_codes: Annotated[
        list[str],
        Meta(
            description="Shown once: each signs in once in place of the authenticator app's "
            "code (`xxxxx-xxxxx`)"
        ),
    ]


@get("/", summary="Your second factor", responses=problems(described=_FORBIDDEN))
async def get_mfa(services: ServicesDep, principal: PrincipalDep) -> MfaStatus:
    async with services.db.read() as conn:
        found = await mfa.status(conn, principal=principal)
    return MfaStatus(
        enabled=found.enabled,
        confirmed_at=found.confirmed_at,
        enrolment_pending=found.enrolment_pending,
        required=found.required,
        recovery_codes_left=found.recovery_codes_left,
    )


@post(
    "/enrol",
    summary="Begin enrolling an authenticator app",
    status_code=201,
    responses=problems(409, described=_FORBIDDEN),
    cache_control=NO_STORE,
    description="A new TOTP seed (RFC 6238: SHA-1, 6 digits, 30 seconds), as an `otpauth://` "
    "URI and a QR code (SVG) rendered by orgplane. Nothing changes at sign-in until POST "
    "/me/mfa/confirm; a new enrolment replaces an unconfirmed one. 409 when a second factor is "
    "already on.",
)
async def begin_enrolment(services: ServicesDep, actor: ActorDep) -> MfaEnrolment:
    enrolment = await services.db.transaction(
        mfa.begin_enrolment, actor=actor, secret_key=services.settings.secret_key
    )
    # The QR code takes ~20 ms of CPU to render: not on the event loop.
    qr_svg = await asyncio.to_thread(lambda: enrolment.qr_svg)
    return MfaEnrolment(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, qr_svg=qr_svg)


@post(
    "/confirm",
    summary="Confirm the enrolment with a code",
    status_code=200,
    responses=problems(409, described=_FORBIDDEN),
    cache_control=NO_STORE,
    description="With the code the app shows, the second factor is on: sign-in needs a code "
    "from then on. Returns 10 recovery codes, shown once. A session restricted to enrolment "
    "may do everything its user may from now on.",
)
async def confirm_enrolment(
    data: JSONBody[MfaCode], services: ServicesDep, actor: ActorDep
) -> RecoveryCodes:
    codes = await services.db.transaction(
        mfa.confirm_enrolment, actor=actor, code=data.code, secret_key=services.settings.secret_key
    )
    return RecoveryCodes(codes)


@delete(
    "/",
    summary="Turn your second factor off",
    status_code=204,
    responses=problems(409, described=_FORBIDDEN),
    description="Needs a current code or a recovery code: a wrong one is a 400 naming `code` "
    "and counts toward the sign-in lockout. 409 in a session of an organization that requires "
    "a second factor.",
)
async def disable(data: JSONBody[MfaCode], services: ServicesDep, actor: ActorDep) -> None:
    mfa.settle(
        await services.db.transaction(
            mfa.disable, actor=actor, code=data.code, secret_key=services.settings.secret_key
        )
    )


@post(
    "/recovery_codes",
    summary="Replace your recovery codes",
    status_code=200,
    responses=problems(409, described=_FORBIDDEN),
    cache_control=NO_STORE,
    description="10 new codes, shown once; the old ones stop working. Needs a current code or "
    "a recovery code (a wrong one counts toward the sign-in lockout).",
)
async def regenerate_recovery_codes(
    data: JSONBody[MfaCode], services: ServicesDep, actor: ActorDep
) -> RecoveryCodes:
    codes = mfa.settle(
        await services.db.transaction(
            mfa.regenerate_recovery_codes,
            actor=actor,
            code=data.code,
            secret_key=services.settings.secret_key,
        )
    )
    return RecoveryCodes(codes)


router = Router(
    path="/me/mfa",
    route_handlers=[
        get_mfa,
        begin_enrolment,
        confirm_enrolment,
        disable,
        regenerate_recovery_codes,
    ],
    tags=["two-factor"],
    # The one part of the API a session restricted to enrolment may use.
    dependencies={"principal": Provide(provide_enrolling_principal)},
)
