"""Two-factor sign-in: a signed-in user's TOTP enrolment, recovery codes and turning it off,
and the org switch that requires a second factor of every member signing in to the org's
subtree.

Enrolment is two steps: ``begin_enrolment`` stores a new seed (sealed, see ``totp``) and returns
it as an ``otpauth://`` URI and a QR code rendered here; nothing changes at sign-in until
``confirm_enrolment`` gets a code computed from it, which also returns the 10 recovery codes
(shown once, stored as sha256 hashes, each good once). From then on sign-in needs a one-time code
(``auth.login``). Turning it off and new recovery codes need a current code too, and a wrong code
there counts toward the sign-in lockout like a wrong one at sign-in: a stolen session cannot try
every code. These commands act on the calling session's own user; an API key has no second
factor to manage.

The switch (``orgs.mfa_required``, set through ``set_org_requirement`` or an org update, with
``manageSignInPolicy``: owners) applies to whoever signs in to the org or to a descendant. A
member without a confirmed second factor then gets a session that may only enrol one
(``enrolment_required`` refuses everything else) until ``confirm_enrolment`` lifts it. Sessions
opened before the switch was turned on keep working until they end (12 hours at most); API keys,
including those bound to a user, are not sign-ins and are not affected.

Every change is audited as a ``user.*`` entry in each org the user belongs to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from orgplane.core.access.principal import Caller, Principal
from orgplane.core.errors import Conflict, Forbidden, InvalidInput, OrgplaneError
from orgplane.core.orgs import service as org_service
from orgplane.core.people import auth, totp
from orgplane.core.people import auth_repository as repo
from orgplane.core.people import mfa_repository as mfa_repo
from orgplane.core.people.errors import EnrolmentRequired
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow

T = TypeVar("T")

WRONG_CODE = "is not a current code of your authenticator app nor an unused recovery code"


@dataclass(frozen=True)
class Status:
    """A user's second factor, and whether the session's org requires one."""

    enabled: bool
    confirmed_at: datetime | None
    enrolment_pending: bool
    required: bool
    recovery_codes_left: int


@dataclass(frozen=True)
class Enrolment:
    """A begun enrolment: the seed (for typing it in), its ``otpauth://`` URI and the URI as a
    QR code (an SVG document). Shown once."""

    secret: str
    otpauth_uri: str

    @functools.cached_property
    def qr_svg(self) -> str:
        """Rendered on first use (~20 ms of CPU), so not while the transaction holds the user's
        row: after it, and off the event loop where that matters."""
        return totp.qr_svg(self.otpauth_uri)


@dataclass(frozen=True)
class Refused:
    """A one-time code a command refused. The failed attempt it counts toward the lockout must
    be committed, so the command returns this instead of raising; ``settle`` raises ``error``
    once the transaction has committed."""

    error: OrgplaneError


def settle(result: T | Refused) -> T:
    """A command's result, or its refusal raised (after its transaction committed)."""
    if isinstance(result, Refused):
        raise result.error
    return result


def _signed_in(principal: Principal) -> int:
    """The user of a session (403 for an API key); their id."""
    if principal.kind != "session" or principal.user_id is None:
        raise Forbidden(
            "a second factor belongs to a signed-in person: call this with a session "
            "(POST /auth/login), not an API key"
        )
    return principal.user_id


def enrolment_required(principal: Principal) -> EnrolmentRequired:
    """The refusal of everything but enrolment to a session restricted to it."""
    return EnrolmentRequired(
        f"organization {principal.org_public_id!r} requires two-factor sign-in of its members: "
        "this session may only enrol a second factor (GET /me/mfa, POST /me/mfa/enrol, "
        "POST /me/mfa/confirm) until the enrolment is confirmed"
    )


async def status(conn: Reader, *, principal: Principal) -> Status:
    user_pk = _signed_in(principal)
    row = await mfa_repo.totp(conn, user_pk)
    enabled = row.totp_confirmed_at is not None
    return Status(
        enabled=enabled,
        confirmed_at=row.totp_confirmed_at,
        enrolment_pending=row.totp_secret is not None and not enabled,
        required=await mfa_repo.required_for_org(conn, principal.org_id),
        recovery_codes_left=await mfa_repo.recovery_codes_left(conn, user_pk) if enabled else 0,
    )


async def _locked_user(tx: Tx, actor: Caller) -> Any:
    """The calling session's user, its row locked (the sign-in lock: codes are used once)."""
    return await repo.lock_user_state(tx, _signed_in(actor.principal))


def _already_on() -> Conflict:
    return Conflict("two-factor sign-in is already on; turn it off first to enrol again")


async def begin_enrolment(tx: Tx, *, actor: Caller, secret_key: str) -> Enrolment:
    """A new seed for the caller, not in force until confirmed (it replaces an unconfirmed
    one). 409 when a confirmed one is in force."""
    user = await _locked_user(tx, actor)
    if user.totp_confirmed_at is not None:
        raise _already_on()
    seed = totp.new_seed()
    sealed = totp.seal(seed, user_pk=user.id, secret_key=secret_key)
    # Not in force yet: no version, the user's representation is unchanged until confirmed.
    await repo.set_user_columns(
        tx, user.id, {"totp_secret": sealed, "totp_confirmed_at": None, "totp_last_step": None}
    )
    auth.audit_user(
        tx,
        actor,
        await repo.member_orgs(tx, user.id),
        user.public_id,
        "user.mfa_enrolment_started",
        after={"method": "totp"},
    )
    return Enrolment(secret=seed, otpauth_uri=totp.provisioning_uri(seed, user.email))


async def confirm_enrolment(tx: Tx, *, actor: Caller, code: str, secret_key: str) -> list[str]:
    """Put the begun enrolment in force with a code computed from its seed (that code is used
    up); the recovery codes, shown once. The calling session, if it was restricted to
    enrolment, may do everything again."""
    principal = actor.principal
    user = await _locked_user(tx, actor)
    if user.totp_confirmed_at is not None:
        raise _already_on()
    if user.totp_secret is None:
        raise Conflict("no enrolment to confirm: begin one first (POST /me/mfa/enrol)")
    normalized = totp.normalize(code)
    if not totp.is_totp_code(normalized):
        raise InvalidInput.for_field("code", "must be the 6-digit code of your authenticator app")
    try:
        seed = totp.open_sealed(user.totp_secret, user_pk=user.id, secret_key=secret_key)
    except totp.SeedUnreadable:
        raise Conflict(
            "this enrolment can no longer be read (the server's secret key changed): begin again"
        ) from None
    step = totp.matching_step(seed, normalized, utcnow())
    if step is None:
        raise InvalidInput.for_field(
            "code",
            "does not match: enter the code the authenticator app you just set up shows now "
            "(and check that the device's clock is right)",
        )
    await repo.set_user_columns(
        tx,
        user.id,
        {"totp_confirmed_at": utcnow(), "totp_last_step": step, "modified_by": actor.label},
        new_version=True,
    )
    codes = await _new_recovery_codes(tx, user.id)
    if principal.enrolment_only:
        await mfa_repo.lift_enrolment_restriction(tx, principal.key_pk)
        tx.forget_keys([principal.key_hash])
    auth.audit_user(
        tx,
        actor,
        await repo.member_orgs(tx, user.id),
        user.public_id,
        "user.mfa_enabled",
        before={"mfa_enabled": False},
        after={"mfa_enabled": True, "method": "totp", "recovery_codes": len(codes)},
    )
    return codes


async def _new_recovery_codes(tx: Tx, user_pk: int) -> list[str]:
    codes = totp.new_recovery_codes()
    await mfa_repo.replace_recovery_codes(tx, user_pk, [totp.recovery_hash(c) for c in codes])
    return codes


async def _redeem(
    tx: Tx, actor: Caller, user: Any, code: str, secret_key: str
) -> tuple[auth.CodeCheck, list[Any], Refused | None]:
    """Check and use up the caller's one-time code for a change of their second factor: a
    wrong one counts as a failed sign-in (and may lock the account, which ends what its sessions
    can do). The check, the user's orgs, and the refusal to return when it failed."""
    if user.totp_confirmed_at is None:
        raise Conflict("two-factor sign-in is not on")
    member_orgs = await repo.member_orgs(tx, user.id)
    now = utcnow()
    checked = await auth.redeem_code(
        tx, actor.meta, user, code, secret_key=secret_key, now=now, member_orgs=member_orgs
    )
    if checked.accepted:
        return checked, member_orgs, None
    if not checked.counts:
        # Nothing to commit: the seed does not open, whatever the code.
        raise Conflict(
            "your second factor's seed can no longer be read (the server's secret key changed): "
            "use a recovery code, or ask an administrator to turn two-factor sign-in off"
        )
    detail = await auth.record_failure(tx, actor.meta, user, member_orgs, now, checked.detail)
    message = WRONG_CODE
    if detail.endswith(auth.ACCOUNT_LOCKED):
        message += "; after too many failed attempts the account is locked"
    return checked, member_orgs, Refused(InvalidInput.for_field("code", message))


async def disable(tx: Tx, *, actor: Caller, code: str, secret_key: str) -> Refused | None:
    """Turn the caller's second factor off with a current code or a recovery code: the seed
    and the recovery codes go. 409 in a session of an org that requires a second factor."""
    principal = actor.principal
    user = await _locked_user(tx, actor)
    if user.totp_confirmed_at is not None and await mfa_repo.required_for_org(tx, principal.org_id):
        raise Conflict(
            f"organization {principal.org_public_id!r} requires two-factor sign-in: it cannot "
            "be turned off in a session there"
        )
    checked, member_orgs, refused = await _redeem(tx, actor, user, code, secret_key)
    if refused is not None:
        return refused
    await mfa_repo.clear(tx, user.id, by=actor.label)
    auth.audit_user(
        tx,
        actor,
        member_orgs,
        user.public_id,
        "user.mfa_disabled",
        before={"mfa_enabled": True},
        after={"mfa_enabled": False, "with": checked.detail},
    )
    return None


async def regenerate_recovery_codes(
    tx: Tx, *, actor: Caller, code: str, secret_key: str
) -> list[str] | Refused:
    """New recovery codes for the caller (the old ones stop working), with a current code or a
    recovery code; shown once."""
    user = await _locked_user(tx, actor)
    _, member_orgs, refused = await _redeem(tx, actor, user, code, secret_key)
    if refused is not None:
        return refused
    codes = await _new_recovery_codes(tx, user.id)
    auth.audit_user(
        tx,
        actor,
        member_orgs,
        user.public_id,
        "user.mfa_recovery_codes_regenerated",
        after={"recovery_codes": len(codes)},
    )
    return codes


async def set_org_requirement(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    required: bool,
    if_match: str | None = None,
) -> Any:
    """Require a second factor of everyone signing in to the org or a descendant, or stop
    requiring it: an org update (``orgs:write`` and ``manageSignInPolicy``), audited as
    ``org.updated``. The org row."""
    return await org_service.update(
        tx, actor=actor, org_ref=org_ref, changes={"mfa_required": required}, if_match=if_match
    )
