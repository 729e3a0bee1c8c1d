"""API keys: minted within the creator's scopes and expiry, shown once, stored as a hash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orgplane.core.access import scopes as scope_catalog
from orgplane.core.access.principal import Actor, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.errors import Forbidden, InvalidInput, NotFound
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
from orgplane.models import credentials, users
from orgplane.models.base import utcnow

KEY_COLUMNS = (
    credentials.c.id,
    credentials.c.public_id,
    credentials.c.org_id,
    credentials.c.kind,
    credentials.c.name,
    credentials.c.hint,
    credentials.c.scopes,
    credentials.c.created_at,
    credentials.c.expires_at,
    credentials.c.last_used_at,
    credentials.c.revoked_at,
    credentials.c.user_id,
    sa.select(users.c.public_id)
    .where(users.c.id == credentials.c.user_id)
    .scalar_subquery()
    .label("user_public_id"),
)


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


async def insert_key(
    tx: Tx,
    *,
    org: Any,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    created_by: int | None,
    user_id: int | None = None,
    kind: str = "native",
) -> CreatedKey:
    secret, vendor = new_secret(kind)
    values = {
        "public_id": new_public_id("key_"),
        "org_id": org.id,
        "root_id": org.root_id,
        "kind": kind,
        "name": name,
        "key_hash": hash_secret(secret),
        "hint": secret[:8],
        "scopes": scopes,
        "created_at": utcnow(),
        "created_by": created_by,
        "expires_at": expires_at,
        "user_id": user_id,
    }
    key_id = (
        await tx.execute(sa.insert(credentials).values(values).returning(credentials.c.id))
    ).scalar_one()
    row = (await tx.execute(sa.select(*KEY_COLUMNS).where(credentials.c.id == key_id))).one()
    return CreatedKey(row=row, secret=secret, vendor=vendor)


async def create(
    tx: Tx,
    actor: Actor,
    org_ref: str,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    user_ref: str | None = None,
    kind: str = "native",
) -> CreatedKey:
    principal = actor.principal
    assert principal is not None
    org = await reach(tx.conn, principal, org_ref, scope="keys:write")
    check_kind(kind)
    name = clean_name(name)
    scopes = scope_catalog.validate(scopes)
    _within_creator(principal, scopes, expires_at)
    user_id = await _bound_user(tx, principal, org, user_ref)
    created = await insert_key(
        tx,
        org=org,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        # created_by names a key; a session is not one (the audit entry names the user).
        created_by=principal.key_pk if principal.kind == "key" else None,
        user_id=user_id,
        kind=kind,
    )
    audit.record(
        tx,
        actor,
        action="key.created",
        root_id=org.root_id,
        org_id=org.id,
        target_type="key",
        target_id=created.row.public_id,
        after=_describe(created.row),
    )
    return created


KINDS = ("native", "datadog", "make", "sumologic")


def check_kind(kind: str) -> None:
    """The secret's format: ``native`` (``opk_...``), ``make`` (a UUID4 token), ``datadog``
    (API key + application key) or ``sumologic`` (access id + access key). Any kind works on
    every surface; the format is what the vendor's client can send."""
    if kind not in KINDS:
        raise InvalidInput.for_field("kind", f"must be one of {', '.join(KINDS)}")


async def _bound_user(tx: Tx, principal: Principal, org: Any, user_ref: str | None) -> int | None:
    """The user a new key acts as: ``user_ref`` (a member of the key's org). A user-bound
    creator cannot mint an unbound key, and binds it to itself by default; the user it binds
    the key to must not hold capabilities the creator lacks there."""
    if user_ref is None:
        if principal.user_id is None:
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
    if principal.capabilities is not None:
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
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput.for_field("expires_at", "must be in the future")
    # A signed-in user's keys are bound to that user, whose capabilities limit them for as long
    # as they live; only a key's own expiry caps the keys it mints.
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
    statement = sa.select(*KEY_COLUMNS).where(credentials.c.org_id == org.id)
    if not include_revoked:
        statement = statement.where(credentials.c.revoked_at.is_(None))
    if after is not None:
        statement = statement.where(credentials.c.id > after[0])
    rows = list((await conn.execute(statement.order_by(credentials.c.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def revoke(tx: Tx, actor: Actor, org_ref: str, key_ref: str) -> tuple[Any, str]:
    """Revoke a key of the org; returns the row and its hash (for the caller's cache)."""
    principal = actor.principal
    assert principal is not None
    org = await reach(tx.conn, principal, org_ref, scope="keys:write")
    row = (
        await tx.execute(
            sa.select(*KEY_COLUMNS, credentials.c.key_hash).where(
                credentials.c.public_id == key_ref, credentials.c.org_id == org.id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"API key {key_ref!r} not found in organization {org_ref!r}")
    if row.revoked_at is None:
        await tx.execute(
            sa.update(credentials).where(credentials.c.id == row.id).values(revoked_at=utcnow())
        )
        audit.record(
            tx,
            actor,
            action="key.revoked",
            root_id=org.root_id,
            org_id=org.id,
            target_type="key",
            target_id=row.public_id,
            before=_describe(row),
        )
    return row, row.key_hash
