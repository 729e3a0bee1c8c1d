"""Sign-in: argon2id passwords, the second factor, sessions, lockout, password resets and
email changes.

Sessions and one-time tokens are random, prefixed secrets shown once; only their sha256 is
stored (``user_tokens``). Login does the same argon2 work whether or not the email is known,
and answers every refusal with the same message, so it tells nobody which emails exist.

The second factor (TOTP or a recovery code; enrolled through ``mfa``) is asked for only after
the right password: "a one-time code is required" tells whoever sent it that the password was
right, as every service with two-step sign-in does. Guessing passwords is what the lockout and
the per-address limit bound; a wrong code counts toward the same lockout as a wrong password.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email

from orgplane.core.access.principal import Actor, RequestMeta
from orgplane.core.audit import service as audit
from orgplane.core.errors import Conflict, FieldError, InvalidInput
from orgplane.core.ids import (
    EMAIL_TOKEN_PREFIX,
    RESET_TOKEN_PREFIX,
    SESSION_TOKEN_PREFIX,
    hash_secret,
    new_prefixed_token,
    prefixed_token_well_formed,
)
from orgplane.core.people import auth_repository as repo
from orgplane.core.people import mfa_repository as mfa_repo
from orgplane.core.people import totp
from orgplane.core.people.repository import unique
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow

PASSWORD_MIN = 12
PASSWORD_MAX = 256
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=12)
RESET_TTL = timedelta(hours=1)
EMAIL_CHANGE_TTL = timedelta(hours=24)
# The one answer to every refused sign-in, whatever the reason, but one: a correct password
# without the one-time code its user's second factor needs (``SECOND_FACTOR_REQUIRED``).
LOGIN_REFUSED = "invalid email or password"
SECOND_FACTOR_REQUIRED = (
    "a one-time code is required: send `otp`, the current code of your authenticator app "
    "or one of your unused recovery codes"
)
# Details of the access log (never a secret).
SECOND_FACTOR_MISSING = "second factor required"
BAD_CODE = "bad one-time code"
ACCOUNT_LOCKED = "account locked"

log = logging.getLogger("orgplane.auth")
# argon2-cffi's defaults are RFC 9106's low-memory recommendation for argon2id.
_hasher = PasswordHasher()


# --- passwords --------------------------------------------------------------------------------


def check_password_policy(password: str, field: str = "password") -> None:
    """400 naming ``field`` unless the password is 12 to 256 characters."""
    if not isinstance(password, str):
        raise InvalidInput.for_field(field, "must be a string")
    if len(password) < PASSWORD_MIN:
        raise InvalidInput.for_field(field, f"must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidInput.for_field(field, f"must be at most {PASSWORD_MAX} characters")


def hash_password(password: str, field: str = "password") -> str:
    """The argon2id hash of a password that meets the policy (400 naming ``field`` if not).

    Slow by design (tens of ms): call it before opening a transaction, or via ``asyncio.to_thread``.
    """
    check_password_policy(password, field)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches; a malformed stored hash is a mismatch, never an error."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def _dummy_hash() -> str:
    """What an unknown email is checked against, so that it costs what a known one does."""
    return _hasher.hash("orgplane-dummy-password-for-unknown-users")


def _verify_or_dummy(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(password_hash, password)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _user_pk(user: Any) -> int:
    """Accept a users row (anything with ``.id``) or the user's integer id."""
    return int(user if isinstance(user, int) else user.id)


def _self_actor(meta: RequestMeta, user_public_id: str) -> Actor:
    return Actor(meta=meta, label_override=f"user:{user_public_id}")


def audit_user(
    tx: Tx,
    actor: Actor,
    member_orgs: list[Any],
    user_public_id: str,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """A user is shared by every org it belongs to: each of them gets the entry."""
    for org in member_orgs:
        audit.record(
            tx,
            actor,
            action=action,
            root_id=org.root_id,
            org_id=org.id,
            target_type="user",
            target_id=user_public_id,
            before=before,
            after=after,
        )


# --- login ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginOutcome:
    """What a login attempt did, for the response and the access log (never a secret)."""

    ok: bool
    detail: str
    user_pk: int | None = None
    user_public_id: str | None = None
    token: str | None = None
    expires_at: datetime | None = None
    session_pk: int | None = None
    org: Any = None
    member_orgs: tuple[Any, ...] = ()
    user: Any = None
    # Set when the org asked for is not one of the user's (a 400 after a correct password).
    bad_org: bool = False
    # Refused after a correct password for want of a valid one-time code: the client should
    # ask for one (a 401 saying so; any other refusal is the same 401 as a wrong password).
    second_factor_required: bool = False
    # Opened a session that may only enrol a second factor: its org requires one, the user has
    # none yet.
    mfa_enrolment_required: bool = False


async def login(
    db: Any,
    meta: RequestMeta,
    email: str,
    password: str,
    org_ref: str | None,
    *,
    otp: str | None = None,
    secret_key: str,
) -> LoginOutcome:
    """Check the credentials and open a session; count failures and lock after too many.

    A user with a confirmed second factor also needs ``otp``: a current TOTP code (accepted
    once) or an unused recovery code (used up); a wrong one counts as a failed sign-in.
    ``secret_key`` opens the TOTP seeds (the settings' ``secret_key``).

    The argon2 check runs in a worker thread between a read and a short write transaction, so
    no transaction is held open for the duration of a hash.
    """
    async with db.read() as conn:
        user = await repo.user_for_login(conn, normalize_email(email))
    password_hash = user.password_hash if user is not None else None
    matched = await asyncio.to_thread(_verify_or_dummy, password_hash, password)
    if user is None:
        return LoginOutcome(False, "unknown user")
    rehashed = None
    if matched and password_hash is not None and needs_rehash(password_hash):
        rehashed = await asyncio.to_thread(_hasher.hash, password)
    outcome: LoginOutcome = await db.transaction(
        _finish_login, meta, user, matched, rehashed, org_ref, otp, secret_key
    )
    return outcome


async def _finish_login(
    tx: Tx,
    meta: RequestMeta,
    user: Any,
    matched: bool,
    rehashed: str | None,
    org_ref: str | None,
    otp: str | None,
    secret_key: str,
) -> LoginOutcome:
    now = utcnow()
    member_orgs = await repo.member_orgs(tx, user.id)
    common = {
        "user_pk": user.id,
        "user_public_id": user.public_id,
        "member_orgs": tuple(member_orgs),
        "user": user,
    }
    if not matched:
        detail = await record_failure(tx, meta, user, member_orgs, now)
        return LoginOutcome(False, detail, **common)
    # Re-read under the row lock: a concurrent failure may have just locked the account, a
    # concurrent sign-in may have just used the same one-time code.
    current = await repo.lock_user_state(tx, user.id)
    if current.locked_at is not None:
        return LoginOutcome(False, ACCOUNT_LOCKED, **common)
    if current.status != "active":
        return LoginOutcome(False, f"user {current.status}", **common)
    usable = [o for o in member_orgs if o.status not in ("deactivated", "deleted")]
    if org_ref is None:
        org = usable[0] if usable else None
        if org is None:
            return LoginOutcome(False, "no organization to act in", **common)
    else:
        org = next((o for o in usable if o.public_id == org_ref), None)
        if org is None:
            return LoginOutcome(False, "not a member of the organization", bad_org=True, **common)
    enrolment_only = False
    if current.totp_confirmed_at is not None:
        if otp is None:
            # The first step of a two-step sign-in, not a guess: not counted.
            return LoginOutcome(False, SECOND_FACTOR_MISSING, second_factor_required=True, **common)
        checked = await redeem_code(
            tx, meta, current, otp, secret_key=secret_key, now=now, member_orgs=member_orgs
        )
        if not checked.accepted:
            detail = checked.detail
            if checked.counts:
                detail = await record_failure(tx, meta, user, member_orgs, now, detail)
            locked = detail.endswith(ACCOUNT_LOCKED)
            return LoginOutcome(False, detail, second_factor_required=not locked, **common)
    else:
        enrolment_only = await mfa_repo.required_in(tx, org.path)
    values: dict[str, Any] = {"failed_logins": 0, "failed_since": None, "last_login_at": now}
    if rehashed is not None:
        values["password_hash"] = rehashed
    await repo.set_user_columns(tx, user.id, values)
    token = new_prefixed_token(SESSION_TOKEN_PREFIX)
    expires_at = now + SESSION_TTL
    session_pk = await repo.insert_session(
        tx,
        token_hash=hash_secret(token),
        user_id=user.id,
        org_id=org.id,
        expires_at=expires_at,
        data=mfa_repo.ENROLMENT_ONLY if enrolment_only else None,
    )
    return LoginOutcome(
        True,
        "ok",
        token=token,
        expires_at=expires_at,
        session_pk=session_pk,
        org=org,
        mfa_enrolment_required=enrolment_only,
        **common,
    )


async def record_failure(
    tx: Tx,
    meta: RequestMeta,
    user: Any,
    member_orgs: list[Any],
    now: datetime,
    what: str = "bad password",
) -> str:
    """Count one failed sign-in (``what`` failed: a password, a one-time code) atomically
    (concurrent failures each count) and lock at the limit; the access log's detail.

    The window is fixed from the first failure: 5 failures within 15 minutes of it lock the
    account; a failure after the window starts a new count.
    """
    counted = await repo.count_failure(tx, user.id, now=now, window_start=now - FAILURE_WINDOW)
    if counted.locked_at is not None:
        return ACCOUNT_LOCKED
    if counted.failed_logins < MAX_FAILURES:
        return what
    if await repo.lock_account(tx, user.id, now):
        audit_user(
            tx,
            _self_actor(meta, user.public_id),
            member_orgs,
            user.public_id,
            "user.locked",
            before={"locked": False},
            after={"locked": True, "reason": f"{counted.failed_logins} failed sign-ins"},
        )
    return f"{what}; {ACCOUNT_LOCKED}"


# --- the second factor at sign-in ---------------------------------------------------------------


@dataclass(frozen=True)
class CodeCheck:
    """What ``redeem_code`` made of a one-time code; ``detail`` says it for the access log."""

    accepted: bool
    detail: str
    # A refusal that counts as a failed sign-in (a wrong or replayed code; not a seed the
    # server cannot open, which is no fault of the person signing in: a recovery code, which
    # needs no seed, still works).
    counts: bool = True


async def redeem_code(
    tx: Tx,
    meta: RequestMeta,
    user: Any,
    code: str,
    *,
    secret_key: str,
    now: datetime,
    member_orgs: list[Any] | None = None,
) -> CodeCheck:
    """Accept and use up ``code`` for ``user`` (its row as ``lock_user_state`` read it, under
    the lock): a TOTP code of a step after the last accepted one, or an unused recovery code
    (audited as ``user.mfa_recovery_code_used`` with how many are left).

    Under the user's row lock, two sign-ins with the same code cannot both pass: the second
    reads the step (or the used code) the first wrote."""
    normalized = totp.normalize(code)
    if totp.is_totp_code(normalized) and user.totp_secret is not None:
        try:
            seed = totp.open_sealed(user.totp_secret, user_pk=user.id, secret_key=secret_key)
        except totp.SeedUnreadable as exc:
            log.error(
                "the TOTP seed of user %s does not open (%s): was ORGPLANE_SECRET_KEY changed?",
                user.public_id,
                exc,
            )
            return CodeCheck(False, "two-factor seed unreadable", counts=False)
        step = totp.matching_step(seed, normalized, now)
        if step is None:
            return CodeCheck(False, BAD_CODE)
        if user.totp_last_step is not None and step <= user.totp_last_step:
            return CodeCheck(False, "one-time code already used")
        await repo.set_user_columns(tx, user.id, {"totp_last_step": step})
        return CodeCheck(True, "totp")
    if not totp.is_recovery_code(normalized) or not await mfa_repo.use_recovery_code(
        tx, user.id, totp.recovery_hash(normalized), now
    ):
        return CodeCheck(False, BAD_CODE)
    left = await mfa_repo.recovery_codes_left(tx, user.id)
    if member_orgs is None:
        member_orgs = await repo.member_orgs(tx, user.id)
    audit_user(
        tx,
        _self_actor(meta, user.public_id),
        member_orgs,
        user.public_id,
        "user.mfa_recovery_code_used",
        after={"recovery_codes_left": left},
    )
    return CodeCheck(True, "recovery code")


async def logout(tx: Tx, session_pk: int) -> bool:
    """End one session (its cache entry is dropped after commit); False when it had already
    ended."""
    hashes = await repo.end_session(tx, session_pk)
    tx.forget_keys(hashes)
    return bool(hashes)


# --- lock -------------------------------------------------------------------------------------


async def unlock_user(tx: Tx, actor: Actor, user: Any) -> bool:
    """Clear the lock and the failure count; audited as ``user.unlocked`` when it was locked.

    The caller has checked that the actor may manage this user. False when it was not locked.
    """
    user_pk = _user_pk(user)
    row = await repo.lock_user_state(tx, user_pk)
    values: dict[str, Any] = {"failed_logins": 0, "failed_since": None}
    if row.locked_at is not None:
        values["locked_at"] = None
    if actor.principal is not None:
        values["modified_by"] = actor.label
    await repo.set_user_columns(tx, user_pk, values, new_version=row.locked_at is not None)
    if row.locked_at is None:
        return False
    audit_user(
        tx,
        actor,
        await repo.member_orgs(tx, user_pk),
        row.public_id,
        "user.unlocked",
        before={"locked": True},
        after={"locked": False},
    )
    return True


# --- one-time tokens: password reset, email change --------------------------------------------


async def _issue(
    tx: Tx, user_pk: int, kind: str, prefix: str, ttl: timedelta, data: Any = None
) -> str:
    """A new one-time token; any earlier unused one of the same kind stops working."""
    await repo.end_tokens(tx, user_pk, kind)
    token = new_prefixed_token(prefix)
    await repo.insert_token(
        tx, token_hash=hash_secret(token), kind=kind, user_id=user_pk, data=data, ttl=ttl
    )
    return token


async def issue_password_reset(tx: Tx, actor: Actor, user: Any) -> str:
    """A password-reset token (valid 1 h, single use), returned once; never a password."""
    user_pk = _user_pk(user)
    public_id = await repo.public_id(tx, user_pk)
    token = await _issue(tx, user_pk, "password_reset", RESET_TOKEN_PREFIX, RESET_TTL)
    audit_user(
        tx,
        actor,
        await repo.member_orgs(tx, user_pk),
        public_id,
        "user.password_reset_issued",
        after={"expires_in_seconds": int(RESET_TTL.total_seconds())},
    )
    return token


def check_email(email: str, field: str) -> str:
    """The address as given (trimmed) if it is a valid one; 400 naming ``field`` if not."""
    if not isinstance(email, str) or not email.strip():
        raise InvalidInput.for_field(field, "an email address is required")
    email = email.strip()
    if len(email) > 254:
        raise InvalidInput.for_field(field, "must be at most 254 characters")
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput.for_field(field, f"not a valid email address: {exc}") from None
    return email


async def request_email_change(
    tx: Tx, actor: Actor, user: Any, new_email: str, field: str = "new_email"
) -> str:
    """A token that, confirmed within 24 h, changes the user's email to ``new_email``."""
    user_pk = _user_pk(user)
    new_email = check_email(new_email, field)
    if await repo.email_taken(tx, normalize_email(new_email), user_pk):
        raise Conflict(
            f"{field}: another user has this email address",
            errors=[FieldError(field, "another user has this email address")],
        )
    public_id = await repo.public_id(tx, user_pk)
    token = await _issue(
        tx, user_pk, "email_change", EMAIL_TOKEN_PREFIX, EMAIL_CHANGE_TTL, {"email": new_email}
    )
    audit_user(
        tx,
        actor,
        await repo.member_orgs(tx, user_pk),
        public_id,
        "user.email_change_requested",
        after={"email": new_email},
    )
    return token


def _token_invalid() -> InvalidInput:
    return InvalidInput.for_field("token", "invalid, expired or already used")


async def _redeem(conn: Any, token: str, kind: str, prefix: str, *, lock: bool) -> Any:
    """The live token row of this kind, or a 400 naming ``token``."""
    if not isinstance(token, str) or not prefixed_token_well_formed(prefix, token):
        raise _token_invalid()
    row = await repo.token(conn, hash_secret(token), kind, lock=lock)
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise _token_invalid()
    return row


async def check_password_reset_token(conn: Reader, token: str) -> None:
    """400 naming ``token`` unless it is a live reset token (a cheap check before hashing)."""
    await _redeem(conn, token, "password_reset", RESET_TOKEN_PREFIX, lock=False)


async def complete_password_reset(
    tx: Tx, meta: RequestMeta, token: str, new_hash: str
) -> list[str]:
    """Set the password from a reset token (single use); ends the user's sessions (dropped
    from the key cache after commit). Returns the ended sessions' hashes."""
    row = await _redeem(tx, token, "password_reset", RESET_TOKEN_PREFIX, lock=True)
    await repo.use_token(tx, row.id)
    public_id = await repo.public_id(tx, row.user_id)
    await repo.set_user_columns(
        tx,
        row.user_id,
        {
            "password_hash": new_hash,
            "failed_logins": 0,
            "failed_since": None,
            "modified_by": f"user:{public_id}",
        },
        new_version=True,
    )
    ended = await repo.end_sessions(tx, row.user_id)
    tx.forget_keys(ended)
    audit_user(
        tx,
        _self_actor(meta, public_id),
        await repo.member_orgs(tx, row.user_id),
        public_id,
        "user.password_changed",
        after={"via": "password_reset", "sessions_ended": len(ended)},
    )
    return ended


async def confirm_email_change(tx: Tx, meta: RequestMeta, token: str) -> Any:
    """Apply a confirmed email change (single use); 409 if the address was taken meanwhile."""
    row = await _redeem(tx, token, "email_change", EMAIL_TOKEN_PREFIX, lock=True)
    new_email = str((row.data or {}).get("email", ""))
    user = await repo.identity(tx, row.user_id)
    if await repo.email_taken(tx, normalize_email(new_email), row.user_id):
        raise Conflict("token: another user has taken this email address meanwhile")
    await repo.use_token(tx, row.id)
    with unique("token: another user has taken this email address meanwhile"):
        await repo.set_user_columns(
            tx,
            row.user_id,
            {
                "email": new_email,
                "email_normalized": normalize_email(new_email),
                "modified_by": f"user:{user.public_id}",
            },
            new_version=True,
        )
    audit_user(
        tx,
        _self_actor(meta, user.public_id),
        await repo.member_orgs(tx, row.user_id),
        user.public_id,
        "user.email_changed",
        before={"email": user.email},
        after={"email": new_email},
    )
    return user.public_id, new_email
