"""API keys: minted within the creator's scopes and expiry, shown once, stored as a hash."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orgplane.core import operator
from orgplane.core.access import scopes as scope_catalog
from orgplane.core.access.principal import Actor, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.credentials import repository
from orgplane.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from orgplane.core.ids import (
    hash_secret,
    new_datadog_pair,
    new_native_key,
    new_public_id,
    new_sumo_pair,
    new_uuid,
    pair_secret,
)
from orgplane.core.orgs.validation import clean_name
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.core.people import memberships as ms
from orgplane.core.people.access import user_capabilities
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow


@dataclass(frozen=True)
class CreatedKey:
    """A new key's row and its secret, shown once: ``secret`` is what authentication hashes;
    ``vendor`` names the parts in the vendor's own words (``token``; ``api_key`` and
    ``application_key``; ``access_id`` and ``access_key``)."""

    row: Any
    secret: str
    vendor: dict[str, str]


def new_secret(kind: str) -> tuple[str, dict[str, str]]:
    """A fresh secret of ``kind``'s format, and its parts under the vendor's names."""
    if kind == "make":
        token = new_uuid()
        return token, {"token": token}
    if kind == "datadog":
        api_key, application_key = new_datadog_pair()
        return pair_secret(api_key, application_key), {
            "api_key": api_key,
            "application_key": application_key,
        }
    if kind == "sumologic":
        access_id, access_key = new_sumo_pair()
        return pair_secret(access_id, access_key), {
            "access_id": access_id,
            "access_key": access_key,
        }
    return new_native_key(), {}


def _describe(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "scopes": list(row.scopes),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "user_id": row.user_public_id,
    }


class _Inherit(enum.Enum):
    FROM_CREATOR = "from the creator"


# ``mint``'s default expiry: the creating key's own (a key never outlives the key that made it).
FROM_CREATOR = _Inherit.FROM_CREATOR


def _creator_scopes(principal: Principal) -> list[str]:
    return (
        [scope_catalog.ALL] if scope_catalog.ALL in principal.scopes else sorted(principal.scopes)
    )


def _creator_expiry(principal: Principal) -> datetime | None:
    # A signed-in user's keys are bound to that user, whose capabilities limit them for as long
    # as they live; only a key's own expiry caps the keys it mints.
    return principal.expires_at if principal.kind == "key" else None


async def mint(
    tx: Tx,
    *,
    actor: Actor,
    org_ref: str,
    name: str,
    kind: str = "native",
    scopes: list[str] | None = None,
    expires_at: datetime | Literal[_Inherit.FROM_CREATOR] | None = FROM_CREATOR,
    user_ref: str | None = None,
) -> CreatedKey:
    """Mint a key for the org ``org_ref``: every surface and the CLI create keys here.

    Unless given, ``scopes`` and ``expires_at`` are the creator's own; ``expires_at=None`` asks
    for a key that never expires. An API principal must reach the org with ``keys:write`` and
    cannot grant more or longer than it holds; the operator's CLI (an actor without a principal)
    names any live org and sets what it likes."""
    principal = actor.principal
    # Locked: a move or deletion committed meanwhile cannot leave a key where it was not allowed.
    if principal is None:
        org = await operator.find_org(tx.conn, org_ref, lock=True)
    else:
        org = await reach(tx.conn, principal, org_ref, scope="keys:write", lock="update")
    check_kind(kind)
    name = clean_name(name)
    if scopes is None:
        scopes = _creator_scopes(principal) if principal is not None else [scope_catalog.ALL]
    scopes = scope_catalog.validate(scopes)
    if expires_at is FROM_CREATOR:
        expires_at = _creator_expiry(principal) if principal is not None else None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput.for_field("expires_at", "must be in the future")
    if principal is not None:
        _within_creator(principal, scopes, expires_at)
    user_id = await _bound_user(tx, principal, org, user_ref)
    secret, vendor = new_secret(kind)
    row = await repository.insert(
        tx,
        {
            "public_id": new_public_id("key_"),
            "org_id": org.id,
            "root_id": org.root_id,
            "kind": kind,
            "name": name,
            "key_hash": hash_secret(secret),
            "hint": secret[:8],
            "scopes": scopes,
            "created_at": utcnow(),
            # created_by names a key; a session or the operator is not one (the audit entry
            # names who it was).
            "created_by": principal.key_pk if principal and principal.kind == "key" else None,
            "expires_at": expires_at,
            "user_id": user_id,
        },
    )
    audit.record(
        tx,
        actor,
        action="key.created",
        root_id=org.root_id,
        org_id=org.id,
        target_type="key",
        target_id=row.public_id,
        after=_describe(row),
    )
    return CreatedKey(row=row, secret=secret, vendor=vendor)


KINDS = ("native", "datadog", "make", "sumologic")


def check_kind(kind: str) -> None:
    """The secret's format: ``native`` (``opk_...``), ``make`` (a UUID4 token), ``datadog``
    (API key + application key) or ``sumologic`` (access id + access key). Any kind works on
    every surface; the format is what the vendor's client can send."""
    if kind not in KINDS:
        raise InvalidInput.for_field("kind", f"must be one of {', '.join(KINDS)}")


async def _bound_user(
    tx: Tx, principal: Principal | None, org: Any, user_ref: str | None
) -> int | None:
    """The user a new key acts as: ``user_ref`` (a member of the key's org). A user-bound
    creator cannot mint an unbound key, and binds it to itself by default; the user it binds
    the key to must not hold capabilities the creator lacks there."""
    if user_ref is None:
        if principal is None or principal.user_id is None:
            return None
        if org.id != principal.org_id:
            raise InvalidInput.for_field(
                "user_id", "a key created by a user for another organization must name its user"
            )
        return principal.user_id
    try:
        member = await ms.find_member(tx.conn, org, user_ref)
    except NotFound:
        raise InvalidInput.for_field(
            "user_id", f"{user_ref!r} is not a member of organization {org.public_id!r}"
        ) from None
    if principal is not None and principal.capabilities is not None:
        held = await user_capabilities(tx.conn, member.id, org.id) or frozenset()
        ms.check_grantable(principal, held)
    user_id: int = member.id
    return user_id


def _within_creator(principal: Principal, scopes: list[str], expires_at: datetime | None) -> None:
    """A key can never mint a key that can do more, or live longer, than itself."""
    granted = scope_catalog.expand(scopes)
    excess = sorted(granted - principal.scopes)
    if excess:
        raise Forbidden(f"a key cannot grant scopes it does not hold: {', '.join(excess)}")
    # Only a key's own expiry caps the keys it mints (see ``_creator_expiry``).
    if (
        principal.kind == "key"
        and principal.expires_at is not None
        and (expires_at is None or expires_at > principal.expires_at)
    ):
        raise Forbidden(
            "a key cannot outlive the key that creates it: set expires_at no later than "
            f"{principal.expires_at.isoformat()}"
        )


async def list_keys(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None,
    include_revoked: bool = False,
) -> tuple[list[Any], str | None]:
    org = await reach(conn, principal, org_ref, scope="keys:read")
    after = decode_cursor(cursor, int)
    rows = await repository.page(
        conn,
        org.id,
        after=after[0] if after is not None else None,
        limit=limit,
        include_revoked=include_revoked,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def every_key(conn: Reader, org_ref: str) -> list[Any]:
    """The operator's listing: every key of the org ``org_ref``, revoked ones too (no reach:
    only the CLI, which sees the whole database, asks)."""
    return await repository.every_key_of(conn, org_ref)


@dataclass(frozen=True)
class Revoked:
    """The revoked key's row (with its hash)."""

    row: Any
    # False when the key was revoked already (nothing changed, nothing audited).
    changed: bool


async def revoke(tx: Tx, *, actor: Actor, key_ref: str, org_ref: str | None = None) -> Revoked:
    """Revoke the key ``key_ref`` of the org ``org_ref``; this process's key cache forgets it
    at commit, so its very next request is refused. An API principal must name an org it
    reaches with ``keys:write``; the operator's CLI may name the key alone.

    Through the API, a tenant root keeps a live key able to manage keys: revoking its last one
    is refused (409), since nothing but the operator's CLI could mint another. The org's row is
    locked for update first, so two revocations of its keys decide one after the other and
    cannot both pass."""
    principal = actor.principal
    org_id: int | None = None
    if principal is not None:
        if org_ref is None:
            raise InvalidInput.for_field("org_id", "name the key's organization")
        org_id = (await reach(tx.conn, principal, org_ref, scope="keys:write", lock="update")).id
    elif org_ref is not None:
        org_id = (await operator.find_org(tx.conn, org_ref)).id
    row = await repository.find_for_update(tx, key_ref, org_id=org_id)
    if row is None:
        where = f" in organization {org_ref!r}" if org_ref is not None else ""
        raise NotFound(f"API key {key_ref!r} not found{where}")
    # Forget it even when it was revoked already: another process may have revoked it while
    # this one still holds it.
    tx.forget_keys([row.key_hash])
    if row.revoked_at is not None:
        return Revoked(row=row, changed=False)
    if principal is not None and await _last_root_manager(tx, row):
        raise Conflict(
            f"API key {key_ref!r} is the last live key of tenant root {org_ref!r} able to manage "
            "keys (keys:write); a tenant root keeps one: create another before revoking this "
            "one, or revoke it with `orgplane keys revoke`",
        )
    await repository.mark_revoked(tx, row.id)
    audit.record(
        tx,
        actor,
        action="key.revoked",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="key",
        target_id=row.public_id,
        before=_describe(row),
    )
    return Revoked(row=row, changed=True)


def _manages_keys(scopes: Any) -> bool:
    return scope_catalog.ALL in scopes or "keys:write" in scopes


async def _last_root_manager(tx: Tx, row: Any) -> bool:
    """Whether ``row`` is the last live key of its tenant root that can manage keys."""
    if row.org_id != row.root_id or not _manages_keys(row.scopes):
        return False
    if row.expires_at is not None and row.expires_at <= utcnow():
        return False
    others = await repository.other_live_scopes(tx, row.org_id, except_pk=row.id)
    return not any(_manages_keys(scopes) for scopes in others)
