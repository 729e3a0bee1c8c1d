"""A reference: what a typical user would otherwise write, FastAPI + SQLAlchemy's async ORM.

Serve it with granian, as ``bench/suite.py`` does::

    REFERENCE_DATABASE_URL=sqlite+aiosqlite:////path/to/orgplane.db \\
        granian --interface asgi --port 8042 reference_app:app

Declarative ORM models are mapped onto orgplane's own ``orgs`` and ``credentials`` tables (the
columns the two lookups need). Both endpoints authenticate the same way, through a dependency:
the bearer key's sha256 is looked up in ``credentials`` (joined to its org) with the ORM on every
request — a revoked key, a deleted or deactivated org, a missing ``orgs:read`` scope are refused
as orgplane refuses them — and the org asked for must lie in the key's subtree (its path
contains ``/<key's org id>/``, orgplane's test).

``GET /orgs/{public_id}`` loads the org with its parent (a joined load of the parent
relationship: one query, as orgplane's) and returns it through a pydantic response model with
orgplane's fields, in orgplane's order. ``GET /orgs/{public_id}/children?limit=100&cursor=...``
loads the parent the same way, then up to ``limit + 1`` live (not soft-deleted) children ordered
by id after the cursor (orgplane's keyset, and its cursor format), returned as
``{"data": [...], "next_cursor": ...}``.

A session per request from ``async_sessionmaker`` (``expire_on_commit=False``), the engine's pool
the size of orgplane's (10 + 10 overflow on PostgreSQL), aiosqlite or asyncpg as the driver.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, joinedload, mapped_column, relationship

DATABASE_URL = os.environ.get("REFERENCE_DATABASE_URL", "sqlite+aiosqlite:///./orgplane.db")
READ_SCOPES = {"*", "orgs:read"}


class Base(DeclarativeBase):
    pass


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36))
    public_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orgs.id"))
    root_id: Mapped[int] = mapped_column(sa.BigInteger)
    path: Mapped[str] = mapped_column(sa.String(512))
    depth: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    deployment: Mapped[str] = mapped_column(sa.String(16))
    country: Mapped[str | None] = mapped_column(sa.String(2))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    plan: Mapped[str] = mapped_column(sa.String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    tags: Mapped[list[str]] = mapped_column(sa.JSON)
    customizations: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    modified_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    version: Mapped[int]

    parent: Mapped[Org | None] = relationship(remote_side=[id], lazy="raise")


class Credential(Base):
    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    public_id: Mapped[str] = mapped_column(sa.String(32))
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(sa.JSON)
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    org: Mapped[Org] = relationship(lazy="raise")


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; orgplane stores UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class OrgOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    uuid: str
    key: int
    sumo_id: str
    parent_id: str | None
    name: str
    description: str
    status: str
    deployment: str
    country: str | None
    timezone: str
    plan: str
    depth: int
    tags: list[str]
    settings: dict[str, Any]
    customizations: dict[str, Any]
    created_at: UtcDatetime
    modified_at: UtcDatetime
    deleted_at: UtcDatetime | None
    version: int

    @classmethod
    def of(cls, org: Org) -> OrgOut:
        return cls(
            id=org.public_id,
            uuid=org.uuid,
            key=org.id,
            sumo_id=f"{org.deployment}-{org.id:016X}",
            parent_id=org.parent.public_id if org.parent is not None else None,
            name=org.name,
            description=org.description,
            status="deleted" if org.deleted_at is not None else org.status,
            deployment=org.deployment,
            country=org.country,
            timezone=org.timezone,
            plan=org.plan,
            depth=org.depth,
            tags=list(org.tags),
            settings=org.settings,
            customizations=org.customizations,
            created_at=org.created_at,
            modified_at=org.modified_at,
            deleted_at=org.deleted_at,
            version=org.version,
        )


class OrgPage(BaseModel):
    data: list[OrgOut]
    next_cursor: str | None


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {}
    return {"pool_size": 10, "max_overflow": 10}


engine = create_async_engine(DATABASE_URL, **_engine_options(DATABASE_URL))
Session = async_sessionmaker(engine, expire_on_commit=False)
bearer = HTTPBearer(auto_error=False)
app = FastAPI(title="reference: FastAPI + SQLAlchemy ORM")


async def get_session() -> AsyncIterator[AsyncSession]:
    async with Session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def current_key(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Credential:
    if credentials is None:
        raise HTTPException(401, "missing credentials")
    key_hash = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    key = await session.scalar(
        sa.select(Credential)
        .options(joinedload(Credential.org))
        .where(Credential.key_hash == key_hash)
    )
    if key is None or key.revoked_at is not None:
        raise HTTPException(401, "invalid credentials")
    if key.expires_at is not None and _utc(key.expires_at) <= datetime.now(UTC):
        raise HTTPException(401, "invalid credentials")
    if key.org.deleted_at is not None or key.org.status in ("deactivated", "deleted"):
        raise HTTPException(401, "invalid credentials")
    return key


KeyDep = Annotated[Credential, Depends(current_key)]


async def reachable_org(session: AsyncSession, key: Credential, public_id: str) -> Org:
    org = await session.scalar(
        sa.select(Org).options(joinedload(Org.parent)).where(Org.public_id == public_id)
    )
    if org is None or org.deleted_at is not None or f"/{key.org_id}/" not in org.path:
        raise HTTPException(404, f"organization {public_id!r} not found")
    if not READ_SCOPES.intersection(key.scopes):
        raise HTTPException(403, "this credential lacks the 'orgs:read' scope")
    return org


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise HTTPException(400, "not a cursor returned by this API") from None
    if not (isinstance(values, list) and len(values) == 1 and type(values[0]) is int):
        raise HTTPException(400, "not a cursor returned by this API")
    return int(values[0])


@app.get("/orgs/{public_id}", response_model=OrgOut)
async def get_org(public_id: str, session: SessionDep, key: KeyDep) -> OrgOut:
    return OrgOut.of(await reachable_org(session, key, public_id))


@app.get("/orgs/{public_id}/children", response_model=OrgPage)
async def list_children(
    public_id: str,
    session: SessionDep,
    key: KeyDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrgPage:
    parent = await reachable_org(session, key, public_id)
    rows = list(
        await session.scalars(
            sa.select(Org)
            .options(joinedload(Org.parent))
            .where(
                Org.parent_id == parent.id,
                Org.deleted_at.is_(None),
                Org.id > decode_cursor(cursor),
            )
            .order_by(Org.id)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        base64.urlsafe_b64encode(orjson.dumps([rows[-1].id])).decode().rstrip("=") if more else None
    )
    return OrgPage(data=[OrgOut.of(r) for r in rows], next_cursor=next_cursor)
