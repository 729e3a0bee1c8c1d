"""Operations endpoints: liveness, readiness, metrics, and who-am-I."""

from __future__ import annotations

import sqlalchemy as sa
from litestar import MediaType, Response, get
from litestar.openapi.datastructures import ResponseSpec

from orgplane.api.deps import PrincipalDep, ServicesDep
from orgplane.api.native.openapi import PublicOperation, problems
from orgplane.api.native.schemas import Health, Me


@get("/healthz", summary="Liveness", tags=["operations"], operation_class=PublicOperation)
async def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    summary="Readiness: the database answers",
    tags=["operations"],
    operation_class=PublicOperation,
    responses={
        503: ResponseSpec(
            Health, description="The database does not answer", generate_examples=False
        )
    },
)
async def readyz(services: ServicesDep) -> Response[Health]:
    try:
        async with services.db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return Response(Health(status="unavailable", database=type(exc).__name__), status_code=503)
    return Response(Health(status="ok", database="ok"))


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    media_type=MediaType.TEXT,
    operation_class=PublicOperation,
)
async def metrics(services: ServicesDep) -> Response[bytes]:
    pool = services.db.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    size = getattr(pool, "size", None)
    if callable(checked_out):
        services.metrics.db_pool_checked_out.set(checked_out())
    if callable(size):
        services.metrics.db_pool_size.set(size())
    return Response(
        services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@get("/me", summary="The calling credential", tags=["operations"], responses=problems())
async def me(principal: PrincipalDep) -> Me:
    return Me(
        key_id=principal.key_id,
        key_name=principal.name,
        org_id=principal.org_public_id,
        scopes=sorted(s for s in principal.scopes if s != "*"),
        expires_at=principal.expires_at,
    )
