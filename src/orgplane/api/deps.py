"""The typed dependencies every endpoint uses: the service container, the principal, the actor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from orgplane.api.mounts import surface_of
from orgplane.api.observability import Metrics
from orgplane.api.ratelimit import RateLimiter, Verdict
from orgplane.config import Settings
from orgplane.core.access.principal import Caller, Principal, RequestMeta
from orgplane.core.access.service import (
    AuthResult,
    KeyCache,
    authenticate,
    credential_from_headers,
    unauthenticated,
)
from orgplane.core.audit.access_log import AccessLogWriter
from orgplane.core.errors import RateLimited, Unauthenticated
from orgplane.core.people import mfa
from orgplane.core.people.access import user_capabilities
from orgplane.db.engine import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    keys: KeyCache
    access_log: AccessLogWriter
    limiter: RateLimiter
    metrics: Metrics
    # Set when the application shuts down: long-lived responses (event streams) end.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


ServicesDep = NamedDependency[Services]
PrincipalDep = NamedDependency[Principal]
ActorDep = NamedDependency[Caller]


# Set in the request's scope state by the fast path (api/fastpath.py) once it has authenticated,
# logged and counted a request it then hands on: (principal, verdict).
SETTLED = "orgplane.settled"


def request_meta(request: Request[Any, Any, Any]) -> RequestMeta:
    client = request.scope.get("client")
    return RequestMeta(
        request_id=request.scope.get("state", {}).get("request_id"),
        ip=client[0] if client else None,
        user_agent=request.headers.get("user-agent"),
        surface=surface_of(request.scope["path"]),
    )


def record_attempt(
    services: Services, result: AuthResult, method: str, path: str, meta: RequestMeta
) -> None:
    """Write an authentication attempt to the access log (buffered)."""
    principal = result.principal
    services.access_log.record(
        actor=principal.label
        if principal
        else (f"key:{result.key_id}" if result.key_id else "anonymous"),
        action="SESSION_AUTH" if (result.key_id or "").startswith("ses_") else "API_KEY_AUTH",
        status="SUCCESS" if principal else "FAILURE",
        org_id=result.org_id,
        root_id=result.root_id,
        key_id=result.key_id,
        # A session's key_pk names its user_tokens row, not a credential with a last-used time.
        key_pk=principal.key_pk if principal and principal.kind == "key" else None,
        user_id=principal.user_id if principal else None,
        method=method,
        path=path,
        ip=meta.ip,
        user_agent=meta.user_agent,
        detail=None if principal else result.reason,
    )


async def provide_principal(request: Request[Any, Any, Any], services: ServicesDep) -> Principal:
    """Authenticate the request (401 on failure), log the attempt, and apply the rate limits;
    a session that may only enrol a second factor is refused (403 naming the rule)."""
    principal = await provide_enrolling_principal(request, services)
    if principal.enrolment_only:
        raise mfa.enrolment_required(principal)
    return principal


async def provide_enrolling_principal(
    request: Request[Any, Any, Any], services: ServicesDep
) -> Principal:
    """``provide_principal`` that lets a session restricted to enrolling a second factor
    through: the principal of the second factor's own endpoints (``/me/mfa``)."""
    settled: tuple[Principal, Verdict | None] | None = request.scope.get("state", {}).pop(
        SETTLED, None
    )
    if settled is not None:
        principal, verdict = settled
    else:
        principal = await _authenticated(request, services)
        verdict = await services.limiter.check(principal.key_id, principal.org_id)
    if verdict is not None:
        request.state.rate_limit = verdict
        if not verdict.allowed:
            services.metrics.rate_limited.labels(verdict.name).inc()
            raise RateLimited(
                f"rate limit of {verdict.limit} requests per {verdict.window} s per {verdict.name} "
                f"exceeded; retry in {max(1, verdict.reset_after)} s",
                headers=verdict.headers(),
            )
    return principal


async def _authenticated(request: Request[Any, Any, Any], services: Services) -> Principal:
    """The request's principal, its attempt in the access log; 401 when there is none."""
    principal, reason = await principal_of(
        request, services, credential_from_headers(request.headers)
    )
    if principal is None:
        raise await refuse_authentication(request, services, reason)
    return principal


async def principal_of(
    request: Request[Any, Any, Any], services: Services, secret: str | None
) -> tuple[Principal | None, str]:
    """The principal ``secret`` names, with a user's capabilities read now, or None and why;
    the attempt goes to the access log either way."""
    result = await authenticate(services.db.read, services.keys, secret)
    record_attempt(services, result, request.method, request.url.path, request_meta(request))
    principal = result.principal
    if principal is None:
        return None, result.reason
    if principal.user_id is not None:
        # Read on every request: a change to the user's roles takes effect on the next one.
        async with services.db.read() as conn:
            capabilities = await user_capabilities(conn, principal.user_id, principal.org_id)
        if capabilities is None:
            return None, "user cannot act"
        principal = replace(principal, capabilities=capabilities)
    return principal, "ok"


async def refuse_authentication(
    request: Request[Any, Any, Any], services: Services, reason: str
) -> Unauthenticated | RateLimited:
    """The error for a failed authentication: 401, or 429 once the client's address is past
    the failed-authentication limit. Counted in ``orgplane_auth_failures`` by reason either way.
    """
    services.metrics.auth_failures.labels(reason).inc()
    verdict = await services.limiter.count_auth_failure(request_meta(request).ip)
    if verdict is None:
        return unauthenticated(reason)
    request.state.rate_limit = verdict
    if verdict.allowed:
        return unauthenticated(reason)
    services.metrics.rate_limited.labels(verdict.name).inc()
    return RateLimited(
        f"too many failed authentications from this address ({verdict.limit} per "
        f"{verdict.window} s); retry in {max(1, verdict.reset_after)} s",
        headers=verdict.headers(),
    )


def provide_actor(request: Request[Any, Any, Any], principal: PrincipalDep) -> Caller:
    return Caller(meta=request_meta(request), principal=principal)


async def limit_sign_in(request: Request[Any, Any, Any], services: Services) -> None:
    """Refuse (429) an unauthenticated password or token attempt past the per-IP limit."""
    verdict = await services.limiter.check_sign_in(request_meta(request).ip)
    if verdict is None:
        return
    request.state.rate_limit = verdict
    if not verdict.allowed:
        services.metrics.rate_limited.labels(verdict.name).inc()
        raise RateLimited(
            "too many sign-in attempts from this address; "
            f"retry in {max(1, verdict.reset_after)} s",
            headers=verdict.headers(),
        )
