"""Authentication and reach: the one place that decides who may touch which org.

Order of answers: no or bad credentials → 401; an org outside the principal's subtree (or that
does not exist) → 404 with the same body; inside it but without the scope → 403.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from orgplane.core.access import scopes as scope_catalog
from orgplane.core.access.principal import Principal
from orgplane.core.errors import Forbidden, NotFound, Unauthenticated
from orgplane.core.ids import (
    SESSION_TOKEN_PREFIX,
    datadog_pair_well_formed,
    hash_secret,
    native_key_well_formed,
    pair_secret,
    prefixed_token_well_formed,
    sumo_pair_well_formed,
    uuid_key_well_formed,
)
from orgplane.db.engine import PreparedSelect, Reader, first
from orgplane.models import credentials, orgs, user_tokens, users
from orgplane.models.base import utcnow

PARENT = orgs.alias("parent")
_parent = PARENT

# Everything a handler needs about an org, including the parent's public id, in one query.
ORG_COLUMNS = (*orgs.c, _parent.c.public_id.label("parent_public_id"))
_ORG_BY_PUBLIC_ID = (
    sa.select(*ORG_COLUMNS)
    .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
    .where(orgs.c.public_id == sa.bindparam("public_id"))
)
# Every request that names an org runs this one: it goes straight to the driver.
_ORG_BY_PUBLIC_ID_PREPARED = PreparedSelect(_ORG_BY_PUBLIC_ID)
# An org named by its integer key (the id vendors such as Make show).
_ORG_BY_KEY = (
    sa.select(*ORG_COLUMNS)
    .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
    .where(orgs.c.id == sa.bindparam("key"))
)
_KEY_BY_HASH = (
    sa.select(
        credentials.c.id,
        credentials.c.public_id,
        credentials.c.org_id,
        credentials.c.root_id,
        credentials.c.user_id,
        credentials.c.name,
        credentials.c.scopes,
        credentials.c.expires_at,
        credentials.c.revoked_at,
        orgs.c.public_id.label("org_public_id"),
        orgs.c.status.label("org_status"),
        orgs.c.deleted_at.label("org_deleted_at"),
    )
    .select_from(credentials.join(orgs, orgs.c.id == credentials.c.org_id))
    .where(credentials.c.key_hash == sa.bindparam("key_hash"))
)

# A sign-in session (``ops_...``): its user, and the org it acts in.
_SESSION_BY_HASH = (
    sa.select(
        user_tokens.c.id,
        user_tokens.c.user_id,
        user_tokens.c.org_id,
        user_tokens.c.expires_at,
        user_tokens.c.used_at,
        user_tokens.c.data,
        users.c.public_id.label("user_public_id"),
        orgs.c.public_id.label("org_public_id"),
        orgs.c.root_id,
        orgs.c.status.label("org_status"),
        orgs.c.deleted_at.label("org_deleted_at"),
    )
    .select_from(
        user_tokens.join(users, users.c.id == user_tokens.c.user_id).join(
            orgs, orgs.c.id == user_tokens.c.org_id
        )
    )
    .where(user_tokens.c.token_hash == sa.bindparam("key_hash"), user_tokens.c.kind == "session")
)


def session_key_id(token_pk: int) -> str:
    """A session's public name in logs and rate limits (never the token)."""
    return f"ses_{token_pk}"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one authentication; for a known but unusable key, whose it was."""

    principal: Principal | None
    reason: str
    key_id: str | None = None
    org_id: int | None = None
    root_id: int | None = None


class KeyCache:
    """A short-lived, bounded cache of key lookups, hits and misses alike.

    Caching misses too keeps an unknown key as cheap as a known one. Revocation, deletion and
    moves clear entries at once in this process; other workers see the change after ``ttl``.
    """

    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, AuthResult]] = OrderedDict()

    def get(self, key_hash: str) -> AuthResult | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, result = entry
        if expires < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return result

    def put(self, key_hash: str, result: AuthResult) -> None:
        if self.ttl <= 0:
            return
        self._entries[key_hash] = (time.monotonic() + self.ttl, result)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()

    def forget(self, key_hashes: frozenset[str] | None) -> None:
        """Drop these entries, or every entry (None): ``Tx.forget_keys`` after a commit."""
        if key_hashes is None:
            self.clear()
        else:
            for key_hash in key_hashes:
                self.invalidate(key_hash)


def parse_authorization(header: str | None) -> str | None:
    """The secret from ``Authorization: Bearer <key>``, ``Token <key>`` (Make) or
    ``Basic base64(accessId:accessKey)`` (Sumo Logic), else None."""
    if not header:
        return None
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if not secret:
        return None
    scheme = scheme.lower()
    if scheme in ("bearer", "token"):
        return secret
    if scheme == "basic":
        try:
            decoded = base64.b64decode(secret, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded if ":" in decoded else None
    return None


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The secret a request carries: its ``Authorization`` header, or Datadog's pair of
    ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` headers (both needed)."""
    secret = parse_authorization(headers.get("authorization"))
    if secret is not None:
        return secret
    api_key = headers.get("dd-api-key")
    application_key = headers.get("dd-application-key")
    if api_key and application_key:
        return pair_secret(api_key.strip(), application_key.strip())
    return None


async def authenticate(conn_factory: Any, cache: KeyCache, secret: str | None) -> AuthResult:
    """Resolve a secret to a principal, or say why not (for the access log).

    ``conn_factory`` is only entered on a cache miss, so a cached key costs no connection.
    """
    if secret is None:
        return AuthResult(None, "missing credentials")
    key_hash = hash_secret(secret)
    result = cache.get(key_hash)
    if result is None:
        # Make tokens, Datadog and Sumo Logic pairs are keys like native ones, in other formats.
        if (
            native_key_well_formed(secret)
            or uuid_key_well_formed(secret)
            or datadog_pair_well_formed(secret)
            or sumo_pair_well_formed(secret)
        ):
            async with conn_factory() as conn:
                row = (await conn.execute(_KEY_BY_HASH, {"key_hash": key_hash})).first()
            result = _result_from_row(row, key_hash)
        elif prefixed_token_well_formed(SESSION_TOKEN_PREFIX, secret):
            async with conn_factory() as conn:
                row = (await conn.execute(_SESSION_BY_HASH, {"key_hash": key_hash})).first()
            result = _result_from_session_row(row, key_hash)
        else:
            # Hashed and cached all the same: a malformed key costs what an unknown one does.
            result = AuthResult(None, "malformed key")
        cache.put(key_hash, result)
    principal = result.principal
    if (
        principal is not None
        and principal.expires_at is not None
        and principal.expires_at <= utcnow()
    ):
        return AuthResult(
            None,
            "expired session" if principal.kind == "session" else "expired key",
            principal.key_id,
            principal.org_id,
            principal.root_id,
        )
    return result


def _result_from_session_row(row: Any, key_hash: str) -> AuthResult:
    """A session acts as its user, in its org, with every scope its user's roles allow."""
    if row is None:
        return AuthResult(None, "unknown session")
    key_id = session_key_id(row.id)
    if row.used_at is not None:
        return AuthResult(None, "ended session", key_id, row.org_id, row.root_id)
    if row.org_deleted_at is not None or row.org_status in ("deactivated", "deleted"):
        return AuthResult(None, "organization not active", key_id, row.org_id, row.root_id)
    principal = Principal(
        key_pk=row.id,
        key_id=key_id,
        key_hash=key_hash,
        org_id=row.org_id,
        org_public_id=row.org_public_id,
        root_id=row.root_id,
        scopes=scope_catalog.expand([scope_catalog.ALL]),
        name="session",
        user_id=row.user_id,
        expires_at=row.expires_at,
        kind="session",
        user_public_id=row.user_public_id,
        enrolment_only=bool((row.data or {}).get("mfa_enrolment_required")),
    )
    return AuthResult(principal, "ok", key_id, row.org_id, row.root_id)


def _result_from_row(row: Any, key_hash: str) -> AuthResult:
    if row is None:
        return AuthResult(None, "unknown key")
    if row.revoked_at is not None:
        return AuthResult(None, "revoked key", row.public_id, row.org_id, row.root_id)
    if row.org_deleted_at is not None or row.org_status in ("deactivated", "deleted"):
        return AuthResult(None, "organization not active", row.public_id, row.org_id, row.root_id)
    principal = Principal(
        key_pk=row.id,
        key_id=row.public_id,
        key_hash=key_hash,
        org_id=row.org_id,
        org_public_id=row.org_public_id,
        root_id=row.root_id,
        scopes=scope_catalog.expand(row.scopes),
        name=row.name,
        user_id=row.user_id,
        expires_at=row.expires_at,
    )
    return AuthResult(principal, "ok", row.public_id, row.org_id, row.root_id)


def allows(principal: Principal, scope: str, capability: str | None = None) -> bool:
    """Whether ``require_scope`` would let the principal through (a surface hides a control
    that would be refused)."""
    if scope not in principal.scopes:
        return False
    if principal.capabilities is None:
        return True
    return (capability or scope_catalog.SCOPE_CAPABILITY[scope]) in principal.capabilities


def require_scope(principal: Principal, scope: str, capability: str | None = None) -> None:
    """The scope, and for a user-bound principal the capability (by default the scope's)."""
    if scope not in principal.scopes:
        raise Forbidden(f"this credential lacks the {scope!r} scope")
    if principal.capabilities is not None:
        needed = capability or scope_catalog.SCOPE_CAPABILITY[scope]
        if needed not in principal.capabilities:
            raise Forbidden(f"your roles in this organization do not grant {needed!r}")


def org_not_found(org_ref: str) -> NotFound:
    return NotFound(f"organization {org_ref!r} not found")


async def reach(
    conn: Reader,
    principal: Principal,
    org_ref: str | int,
    *,
    scope: str,
    capability: str | None = None,
    include_deleted: bool = False,
    lock: Literal["share", "update"] | None = None,
) -> Any:
    """Fetch the org ``org_ref`` (a public id, or an integer key) if the principal may reach
    it, then check ``scope``.

    ``lock`` takes a row lock (PostgreSQL) for a write that depends on what was read.
    """
    params: dict[str, str | int]
    if not _storable_ref(org_ref):
        # No org has this id, and PostgreSQL could not even compare it (NUL in text, an integer
        # past 64 bits): the same "not found" as any other id that names nothing.
        return reached(principal, None, org_ref, scope=scope, capability=capability)
    if isinstance(org_ref, int):
        statement, params = _ORG_BY_KEY, {"key": org_ref}
    else:
        statement, params = _ORG_BY_PUBLIC_ID, {"public_id": org_ref}
    if lock is not None:
        statement = statement.with_for_update(of=orgs, read=lock == "share")
        row = (await conn.execute(statement, params)).first()
    elif statement is _ORG_BY_PUBLIC_ID:
        row = await first(conn, _ORG_BY_PUBLIC_ID_PREPARED, params)
    else:
        row = (await conn.execute(statement, params)).first()
    return reached(
        principal,
        row,
        org_ref,
        scope=scope,
        capability=capability,
        include_deleted=include_deleted,
    )


def _storable_ref(org_ref: str | int) -> bool:
    if isinstance(org_ref, int):
        return -(2**63) <= org_ref < 2**63
    return "\x00" not in org_ref


def reached(
    principal: Principal,
    row: Any,
    org_ref: str | int,
    *,
    scope: str,
    capability: str | None = None,
    include_deleted: bool = False,
) -> Any:
    """``reach``'s decision on an org row a command read itself (None: no such org), for a
    statement that reads several orgs at once: 404 outside the principal's subtree, then 403."""
    if row is None or not principal.reaches(row.path):
        raise org_not_found(str(org_ref))
    if row.deleted_at is not None and not include_deleted:
        raise org_not_found(str(org_ref))
    require_scope(principal, scope, capability)
    return row


async def out_of_reach(conn: Reader, principal: Principal, public_ids: Iterable[str]) -> set[str]:
    """Of these org public ids (named in a log entry the principal reads), those it may not
    see: outside its subtree, or no org's. Such an id is shown as null: an entry of the
    principal's own org must not name the parent that ``GET /orgs/{id}`` hides."""
    return await hidden_from(conn, principal.reaches, public_ids)


async def hidden_from(
    conn: Reader, reaches: Callable[[str], bool], public_ids: Iterable[str]
) -> set[str]:
    """Of these org public ids, those outside what ``reaches`` (a test of an org's path)
    accepts, or no org's: ``out_of_reach`` for a principal, or for a webhook's org."""
    wanted = sorted(set(public_ids))
    if not wanted:
        return set()
    found = {
        row.public_id: row.path
        for row in await conn.execute(
            sa.select(orgs.c.public_id, orgs.c.path).where(orgs.c.public_id.in_(wanted))
        )
    }
    return {p for p in wanted if p not in found or not reaches(found[p])}


def unauthenticated(reason: str) -> Unauthenticated:
    detail = "missing credentials" if reason == "missing credentials" else "invalid credentials"
    return Unauthenticated(
        f"{detail}: send 'Authorization: Bearer <api key>'",
        headers={"WWW-Authenticate": 'Bearer realm="orgplane"'},
    )
