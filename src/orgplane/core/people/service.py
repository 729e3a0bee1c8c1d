"""People's use cases as commands: each surface (native, SCIM, Datadog, Make, Sumo Logic) parses
its request, makes one of these calls in one transaction, and renders the result.

The commands compose the building blocks of ``users``, ``invitations`` and ``roles``, so that a
rule (who may add whom, when an invitation is issued, what is audited) is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from orgplane.core.access.principal import Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput, NotFound
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import memberships as ms
from orgplane.core.people import users as user_service
from orgplane.core.people.users import Member
from orgplane.db.engine import Reader, Tx

InvitationPolicy = Literal["if_new", "never"]
# An org named by its public id, or by its integer key (the id Make shows).
OrgRef = str | int
# A user named by their public id, or by their integer key (the id Make shows).
UserRef = str | int


async def _reach(conn: Reader, principal: Principal, org_ref: OrgRef, **options: Any) -> Any:
    if isinstance(org_ref, int):
        return await reach(conn, principal, org_ref, **options)
    return await reach(conn, principal, org_ref, **options)


@dataclass(frozen=True)
class Invited:
    """The member added, whether the identity was created, and the invitation issued (with its
    token, shown once) if one was."""

    member: Member
    created: bool
    invitation: invitation_service.Issued | None
    org: Any  # the org row (as ``reach`` returns it), for surfaces that show more of it


async def invite_member(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: OrgRef,
    email: Any,
    profile: dict[str, Any],
    roles: list[str],
    invitation: InvitationPolicy = "if_new",
    active: bool = True,
    scope: str = "users:write",
) -> Invited:
    """Add the person with this email to the org with these roles, creating the identity
    (``pending``) if the email is new, and issue an invitation as ``invitation`` says: for a new
    identity only (the default: the token is how they set a password), or never (Datadog creates
    users and invites them in two calls).

    ``scope`` is what the caller needs on the org: ``users:write``, or ``orgs:write`` where the
    member is the contact named when creating the org (Sumo Logic). ``active=False`` adds the
    member disabled (SCIM's ``active: false``). A concurrent insert of the same identity or
    membership is a 409, never a 500.
    """
    org, member, created = await _add(tx, actor, org_ref, email, profile, roles, scope)
    issued = None
    if invitation == "if_new" and created:
        issued = await invitation_service.issue(tx, actor, org, member.row.id, member.roles)
    if not active:
        member = await user_service.set_status(
            tx, actor, org.public_id, member.row.public_id, enable=False
        )
    return Invited(member, created, issued, org)


async def invite(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: OrgRef,
    email: Any,
    profile: dict[str, Any],
    roles: list[str],
) -> tuple[Member, invitation_service.Issued]:
    """Add the person as ``invite_member`` does and always issue an invitation, also to a known
    identity (the native and Make invitation endpoints)."""
    org, member, _ = await _add(tx, actor, org_ref, email, profile, roles, "users:write")
    return member, await invitation_service.issue(tx, actor, org, member.row.id, member.roles)


async def _add(
    tx: Tx,
    actor: Caller,
    org_ref: OrgRef,
    email: Any,
    profile: dict[str, Any],
    roles: list[str],
    scope: str,
) -> tuple[Any, Member, bool]:
    # The org row is locked first: every change to its memberships takes the same lock.
    org = await _reach(tx.conn, actor.principal, org_ref, scope=scope, lock="update")
    member, created = await user_service.add_member(
        tx, actor, org, email=email, profile=profile, role_refs=roles
    )
    return org, member, created


async def issue_invitations(
    tx: Tx, *, actor: Caller, org_ref: OrgRef, user_refs: Iterable[tuple[str, str]]
) -> list[invitation_service.Issued]:
    """A fresh invitation for each named member of the org (with the roles they hold now).

    ``user_refs`` pairs each user's id with the request field that named it, for the 400 when
    it is not a member."""
    org = await _reach(tx.conn, actor.principal, org_ref, scope="users:write", lock="update")
    issued = []
    for user_ref, field in user_refs:
        try:
            member = await ms.find_member(tx.conn, org, user_ref)
        except NotFound:
            raise InvalidInput.for_field(
                field, f"{user_ref!r} is not a user of organization {org.public_id!r}"
            ) from None
        held = (await ms.roles_of(tx.conn, org.id, [member.id]))[member.id]
        issued.append(await invitation_service.issue(tx, actor, org, member.id, held))
    return issued


async def _user_ref(tx: Tx, user_ref: UserRef, org: Any) -> str:
    """The public id of a member of ``org`` named by public id or integer key. A key that is
    not a member's answers as a key that does not exist: the 404 names only what was sent."""
    if isinstance(user_ref, str):
        return user_ref
    return await user_service.member_public_id_by_key(tx.conn, org, user_ref)


async def change_member(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: OrgRef,
    user_ref: UserRef,
    fields: dict[str, Any],
    active: bool | None = None,
    email: str | None = None,
    email_field: str = "email",
) -> Member:
    """Change a member's profile and/or roles (``fields``, as ``users.update_member``), then
    enable or disable them when ``active`` differs from their state.

    Surfaces whose update carries the email pass it as ``email``: the address changes only
    through a confirmed token, so a different one is a 400 naming ``email_field``."""
    org = await _reach(tx.conn, actor.principal, org_ref, scope="users:write", lock="update")
    user_public_id = await _user_ref(tx, user_ref, org)
    if email is not None:
        current = await ms.find_member(tx.conn, org, user_public_id)
        if email.strip().lower() != current.email_normalized:
            raise InvalidInput.for_field(
                email_field,
                "cannot be changed here: orgplane confirms a new address by token "
                f"(POST /orgs/{org.public_id}/users/{user_public_id}/email/request_change)",
            )
    member = await user_service.update_member(tx, actor, org.public_id, user_public_id, fields)
    if active is not None and active != (member.row.status != "disabled"):
        member = await user_service.set_status(
            tx, actor, org.public_id, user_public_id, enable=active
        )
    return member
