"""Users and their memberships: add, list, change, disable/enable, remove (with a hand-over).

A user is one identity (email unique whatever its case) with memberships in orgs. A user
created here is ``pending`` and cannot act until they accept the invitation issued with it
(which sets their password); an existing user is simply added as a member.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from orgplane.core.access.principal import Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.errors import Conflict, InvalidInput, NotFound
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.core.people import auth, auth_repository, repository
from orgplane.core.people import memberships as ms
from orgplane.core.people import mfa_repository as mfa_repo
from orgplane.core.people.auth import normalize_email
from orgplane.core.people.repository import unique
from orgplane.db.engine import Reader, Tx
from orgplane.models import (
    users,
)

PROFILE_FIELDS = ("first_name", "last_name", "title")
PROFILE_MAX = 100
CONCURRENT_MEMBER = "a concurrent change created the same user or membership; retry"
SORTS = {
    "email": users.c.email_normalized,
    "first_name": sa.func.lower(users.c.first_name),
    "last_name": sa.func.lower(users.c.last_name),
}


def clean_email(value: Any, field: str = "email") -> tuple[str, str]:
    """The email as given (trimmed) and its normalized (lower-cased) form, or a 400."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput.for_field(field, "must be an email address")
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput.for_field(field, str(exc)) from None
    email = checked.normalized
    if len(email) > 254:
        raise InvalidInput.for_field(field, "must be at most 254 characters")
    return email, normalize_email(email)


def clean_profile(fields: dict[str, Any]) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for name in PROFILE_FIELDS:
        if name not in fields:
            continue
        value = fields[name]
        if not isinstance(value, str):
            raise InvalidInput.for_field(name, "must be a string")
        value = value.strip()
        if len(value) > PROFILE_MAX:
            raise InvalidInput.for_field(name, f"must be at most {PROFILE_MAX} characters")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
            raise InvalidInput.for_field(name, "must not contain control characters")
        cleaned[name] = value
    return cleaned


def profile_from_full_name(name: str | None) -> dict[str, str]:
    """A single display name (as Datadog and Make send it) as first and last name: split at the
    last space, so "Mary Ann Smith" is Mary Ann / Smith; one word is a first name."""
    if not name or not name.strip():
        return {}
    first, _, last = name.strip().rpartition(" ")
    return (
        {"first_name": first, "last_name": last} if first else {"first_name": last, "last_name": ""}
    )


def describe(row: Any, role_refs: list[str] | None = None) -> dict[str, Any]:
    out = {
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "title": row.title,
        "status": row.status,
    }
    if role_refs is not None:
        out["roles"] = role_refs
    return out


@dataclass(frozen=True)
class Member:
    """A user as a member of one org, with their roles there."""

    row: Any
    roles: list[str]
    org_public_id: str


async def _member(conn: Reader, org: Any, user_ref: str) -> Member:
    row = await ms.find_member(conn, org, user_ref)
    held = await ms.roles_of(conn, org.id, [row.id])
    return Member(row, held[row.id], org.public_id)


async def add_member(
    tx: Tx,
    actor: Caller,
    org: Any,
    *,
    email: Any,
    profile: dict[str, Any],
    role_refs: list[str],
) -> tuple[Member, bool]:
    """Add the user with this email to ``org`` (creating the identity, pending, if new).

    Returns the member and whether the identity was created. Caller has checked reach.
    """
    principal = actor.principal
    email, normalized = clean_email(email)
    cleaned = clean_profile(profile)
    resolved = await ms.resolve_roles(tx.conn, org, role_refs)
    ms.check_grantable(principal, [c for caps in resolved.values() for c in caps])
    existing = await repository.user_by_email(tx, normalized)
    created = existing is None
    if existing is None:
        with unique(CONCURRENT_MEMBER):
            user_id = await repository.insert_user(
                tx, email=email, normalized=normalized, profile=cleaned, by=actor.label
            )
    else:
        user_id = existing.id
        if await repository.is_member(tx, user_id, org.id):
            raise Conflict(
                f"{email!r} is already a member of organization {org.public_id!r} "
                f"(user {existing.public_id!r})",
                extra={"user_id": existing.public_id},
            )
    with unique(CONCURRENT_MEMBER):
        await repository.insert_membership(tx, user_id, org)
    await ms.set_roles(tx, org, user_id, resolved)
    member = await _member(tx.conn, org, await _public_id(tx, user_id))
    audit.record(
        tx,
        actor,
        action="user.created" if created else "user.added",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=member.row.public_id,
        after=describe(member.row, member.roles),
    )
    return member, created


async def _public_id(conn: Reader | Tx, user_id: int) -> str:
    value = await public_id_by_key(conn, user_id)
    assert value is not None, f"user {user_id} vanished"
    return value


async def public_id_by_key(conn: Reader | Tx, user_key: int) -> str | None:
    """The public id of the user with this integer key (the id vendors such as Make show)."""
    return await repository.user_public_id(conn, user_key)


async def member_public_id_by_key(conn: Reader | Tx, org: Any, user_key: int) -> str:
    """The public id of the member of ``org`` with this integer key (the id vendors such as
    Make show). 404 naming the key alone when no member of the org has it, whether or not the
    user exists elsewhere: the answer never tells an unreachable user from a missing one."""
    public_id = await public_id_by_key(conn, user_key)
    if public_id is None or not await repository.is_member(conn, user_key, org.id):
        raise NotFound(f"user {user_key} not found")
    return public_id


async def get_member(conn: Reader, principal: Principal, org_ref: str, user_ref: str) -> Member:
    org = await reach(conn, principal, org_ref, scope="users:read")
    return await _member(conn, org, user_ref)


async def list_members(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None,
    sort: str = "email",
    email: str | None = None,
    status: str | None = None,
    role: str | None = None,
) -> tuple[list[Member], str | None]:
    org = await reach(conn, principal, org_ref, scope="users:read")
    if sort not in SORTS:
        raise InvalidInput.for_field("query.sort", f"must be one of {', '.join(SORTS)}")
    rows = await repository.members_page(
        conn,
        org.id,
        sort=SORTS[sort],
        email=email,
        status=status,
        role=role,
        after=decode_cursor(cursor, str, int),
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    held = await ms.roles_of(conn, org.id, [r.id for r in rows])
    page = [Member(r, held[r.id], org.public_id) for r in rows]
    return page, encode_cursor(rows[-1].sort_key, rows[-1].id) if more else None


async def update_member(
    tx: Tx, actor: Caller, org_ref: str, user_ref: str, fields: dict[str, Any]
) -> Member:
    """Change the user's profile (every org they belong to must be in reach) and/or their
    roles in this org (replacing them)."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    before = await _member(tx.conn, org, user_ref)
    profile = clean_profile(fields)
    changes: dict[str, Any] = {k: v for k, v in profile.items() if getattr(before.row, k) != v}
    if changes:
        await ms.ensure_identity_reached(tx.conn, principal, before.row.id)
    new_roles = before.roles
    if "roles" in fields:
        resolved = await ms.resolve_roles(tx.conn, org, fields["roles"])
        new_roles = sorted(resolved)
        added = set(new_roles) - set(before.roles)
        ms.check_grantable(principal, [c for ref in added for c in resolved[ref]])
        if set(new_roles) != set(before.roles):
            await ms.ensure_guardian_left(tx.conn, org, before.row.id, new_roles)
            await ms.set_roles(tx, org, before.row.id, new_roles)
            changes["roles"] = new_roles
    if not changes:
        return before
    profile_changes = {k: v for k, v in changes.items() if k != "roles"}
    if profile_changes:
        await repository.write_user(tx, before.row.id, profile_changes, by=actor.label)
    after = await _member(tx.conn, org, user_ref)
    audit.record(
        tx,
        actor,
        action="user.updated",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=after.row.public_id,
        before=describe(before.row, before.roles),
        after=describe(after.row, after.roles),
    )
    return after


async def set_status(tx: Tx, actor: Caller, org_ref: str, user_ref: str, *, enable: bool) -> Member:
    """Disable or enable the identity (everywhere: it is one person). Enabling returns the user
    to ``active`` if they have a password, else to ``pending``."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    before = await _member(tx.conn, org, user_ref)
    held = await ms.ensure_identity_reached(tx.conn, principal, before.row.id)
    if enable:
        if before.row.status != "disabled":
            return before
        status = "active" if before.row.password_hash else "pending"
    else:
        if before.row.status == "disabled":
            return before
        if principal.user_id == before.row.id:
            raise Conflict("you cannot disable yourself")
        # The user may guard other orgs than the one locked by reach: lock them all before
        # deciding, or a change made through another org could leave one without a guardian.
        await ms.lock_orgs(tx, [m.id for m in held])
        for membership in held:
            await ms.ensure_guardian_left(tx.conn, membership, before.row.id)
        status = "disabled"
    await repository.write_user(tx, before.row.id, {"status": status}, by=actor.label)
    if not enable:
        # The user's keys and sessions stop at once (their capabilities are read on every
        # request too; this also drops what the key cache holds of them).
        tx.forget_keys(await repository.credential_hashes(tx, before.row.id))
    after = await _member(tx.conn, org, user_ref)
    audit.record(
        tx,
        actor,
        action="user.enabled" if enable else "user.disabled",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=after.row.public_id,
        before={"status": before.row.status},
        after={"status": after.row.status},
    )
    return after


@dataclass(frozen=True)
class Removal:
    user_public_id: str
    # Hashes of keys whose binding changed (revoked or moved); ``remove_member`` has registered
    # them with ``tx.forget_keys``.
    key_hashes: list[str]


async def remove_member(
    tx: Tx, actor: Caller, org_ref: str, user_ref: str, *, transfer_to: str | None = None
) -> Removal:
    """Remove the membership. API keys of this org bound to the user pass to ``transfer_to``
    (a member of the org) or are revoked; the user's open invitations to the org are revoked.
    The identity stays (the audit trail names it) even when it has no membership left."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    member = await _member(tx.conn, org, user_ref)
    heir = None
    if transfer_to is not None:
        if transfer_to == user_ref:
            raise InvalidInput.for_field("query.transfer_to", "must be another member")
        try:
            heir = await ms.find_member(tx.conn, org, transfer_to)
        except NotFound as exc:  # a bad parameter, not a missing resource
            raise InvalidInput.for_field(
                "query.transfer_to", f"{transfer_to!r} is not a member of this organization"
            ) from exc
    await ms.ensure_guardian_left(tx.conn, org, member.row.id)
    keys = await repository.bound_keys(tx, org.id, member.row.id)
    if keys:
        await repository.rebind_keys(tx, [k.id for k in keys], heir.id if heir else None)
    await repository.revoke_open_invitations(tx, org.id, member.row.id)
    await repository.delete_membership(tx, org.id, member.row.id)
    audit.record(
        tx,
        actor,
        action="user.removed",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=member.row.public_id,
        before=describe(member.row, member.roles),
        after={
            "transfer_to": heir.public_id if heir else None,
            "keys_transferred" if heir else "keys_revoked": [k.public_id for k in keys],
        },
    )
    # A cached principal carries its user: a revoked key, or one now bound to the heir, is
    # looked up afresh after commit.
    tx.forget_keys(k.key_hash for k in keys)
    return Removal(member.row.public_id, [k.key_hash for k in keys])


async def _managed_identity(
    tx: Tx, actor: Caller, org_ref: str, user_ref: str
) -> tuple[Any, Member]:
    """The org and a member of it whose identity the actor may manage (it reaches all their
    orgs)."""
    principal = actor.principal
    org = await reach(tx.conn, principal, org_ref, scope="users:write", lock="update")
    member = await _member(tx.conn, org, user_ref)
    await ms.ensure_identity_reached(tx.conn, principal, member.row.id)
    return org, member


async def unlock(tx: Tx, actor: Caller, org_ref: str, user_ref: str) -> Member:
    """Clear a sign-in lock (audited by ``auth.unlock_user`` when there was one)."""
    org, member = await _managed_identity(tx, actor, org_ref, user_ref)
    await auth.unlock_user(tx, actor, member.row)
    return await _member(tx.conn, org, user_ref)


async def start_password_reset(tx: Tx, actor: Caller, org_ref: str, user_ref: str) -> str:
    """A single-use reset token for the member (to hand over; no password is ever returned)."""
    _, member = await _managed_identity(tx, actor, org_ref, user_ref)
    return await auth.issue_password_reset(tx, actor, member.row)


async def start_email_change(
    tx: Tx, actor: Caller, org_ref: str, user_ref: str, new_email: str
) -> str:
    """A token that, confirmed, moves the member's identity to ``new_email``."""
    _, member = await _managed_identity(tx, actor, org_ref, user_ref)
    return await auth.request_email_change(tx, actor, member.row, new_email, field="new_email")


async def disable_mfa(tx: Tx, actor: Caller, org_ref: str, user_ref: str, email: Any) -> Member:
    """Turn off the member's second factor (an administrator's reset, for a lost device): the
    seed, an unconfirmed enrolment and the recovery codes go; where an org requires a second
    factor, their next sign-in there enrols one again. ``email`` must be the member's (a guard
    against acting on the wrong user); the change and the request are audited even when the
    user had none to turn off."""
    org, member = await _managed_identity(tx, actor, org_ref, user_ref)
    _, normalized = clean_email(email)
    if normalized != member.row.email_normalized:
        raise InvalidInput.for_field("email", f"is not the email of user {user_ref!r}")
    second_factor = await auth_repository.lock_user_state(tx, member.row.id)
    if second_factor.totp_secret is not None:
        await mfa_repo.clear(tx, member.row.id, by=actor.label)
    audit.record(
        tx,
        actor,
        action="user.mfa_disabled",
        root_id=org.root_id,
        org_id=org.id,
        target_type="user",
        target_id=member.row.public_id,
        before={"mfa_enabled": second_factor.totp_confirmed_at is not None},
        after={"mfa_enabled": False},
    )
    return await _member(tx.conn, org, user_ref)
