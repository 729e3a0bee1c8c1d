"""create_app(): the one ASGI application serving every surface."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from orgplane import __version__, console
from orgplane.api.body import OrgplaneRequest
from orgplane.api.deps import Services, provide_actor, provide_principal
from orgplane.api.dialects import datadog as datadog_dialect
from orgplane.api.dialects import make as make_dialect
from orgplane.api.dialects import openapi as dialect_openapi
from orgplane.api.dialects import sumologic as sumologic_dialect
from orgplane.api.fastpath import FastReads
from orgplane.api.native import (
    alerts,
    consumption,
    credits,
    customizations,
    events,
    keys,
    logs,
    meters,
    mfa,
    ops,
    orgs,
    roles,
    usage,
    users,
    webhooks,
)
from orgplane.api.native import auth as auth_api
from orgplane.api.observability import Metrics, ObservabilityMiddleware
from orgplane.api.ratelimit import RateLimiter, add_rate_limit_headers
from orgplane.api.scim.routes import router as scim_router
from orgplane.api.surfaces import EXCEPTION_HANDLERS, agree_on_allow
from orgplane.config import Settings, get_settings
from orgplane.core import idempotency
from orgplane.core.access.service import KeyCache
from orgplane.core.audit import service as audit
from orgplane.core.audit.access_log import AccessLogWriter
from orgplane.core.errors import InvalidInput
from orgplane.core.webhooks.worker import Worker
from orgplane.db.engine import Database
from orgplane.logging import configure as configure_logging

DOCS_ASSETS = "/docs/assets"
DESCRIPTION = """A control plane for trees of organizations: the orgs, their API keys, what
they consume, and the audit and access logs. Authenticate with `Authorization: Bearer <key>`.
Errors are RFC 9457 problem+json documents whose `errors` member names each bad field."""


def build_services(settings: Settings) -> Services:
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    db.before_commit = audit.append_pending
    keys = KeyCache(settings.key_cache_seconds)
    db.keys_forgotten = keys.forget
    return Services(
        settings=settings,
        db=db,
        keys=keys,
        access_log=AccessLogWriter(db, settings.access_log_flush_seconds),
        limiter=RateLimiter(
            settings.rate_limit_per_key,
            settings.rate_limit_per_org,
            settings.redis_url,
            settings.rate_limit_sign_in_per_ip,
            settings.rate_limit_auth_failures_per_ip,
        ),
        metrics=Metrics(),
    )


HOUSEKEEPING_SECONDS = 600


async def _housekeeping(services: Services) -> None:
    """Drop idempotency records past their TTL, every few minutes, in every worker (idempotent)."""
    log = logging.getLogger("orgplane.housekeeping")
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            removed = await services.db.transaction(
                idempotency.purge_expired, services.settings.idempotency_ttl_hours
            )
            if removed:
                log.info("purged %d expired idempotency keys", removed)
        except Exception:
            log.exception("housekeeping failed; will retry")


async def reject_nul(request: Request[Any, Any, Any]) -> None:
    """PostgreSQL text cannot hold NUL: refuse it in the path and query before it reaches SQL."""
    if "\x00" in request.scope["path"]:
        raise InvalidInput.for_field("path", "must not contain NUL characters")
    query = request.scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        raise InvalidInput.for_field("query", "must not contain NUL characters")


def create_litestar(services: Services) -> Litestar:
    """The Litestar application; ``services`` lives in its state (``bind`` replaces it)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services: Services = app.state.services
        services.access_log.start()
        # Everything built so far (routes, schemas, the OpenAPI document) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it (a ~20 ms
        # pause in the first seconds of traffic), and forked workers keep sharing its pages.
        gc.collect()
        gc.freeze()
        housekeeping = asyncio.create_task(_housekeeping(services), name="orgplane-housekeeping")
        # Webhooks are dispatched and delivered, and events published to NATS (when it is set
        # up), in every server process unless dedicated `orgplane worker` processes do it:
        # claims and positions are safe to share.
        stop_webhooks = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        if services.settings.webhook_delivery == "inprocess":
            background.append(
                asyncio.create_task(
                    Worker(services.db, services.settings).run(stop_webhooks),
                    name="orgplane-webhooks",
                )
            )
            if services.settings.events_nats_url:
                # Imported only where the sink runs: nats-py stays out of other servers' memory.
                from orgplane.core.events.jetstream import NatsSink

                background.append(
                    asyncio.create_task(
                        NatsSink(services.db, services.settings).run(stop_webhooks),
                        name="orgplane-nats-sink",
                    )
                )
        try:
            yield
        finally:
            services.stopping.set()
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            stop_webhooks.set()
            for task in background:
                with contextlib.suppress(Exception):
                    await task
            await services.access_log.stop()
            await services.limiter.close()
            await services.db.dispose()

    openapi = OpenAPIConfig(
        title="orgplane",
        version=__version__,
        description=DESCRIPTION,
        path="/docs",
        # Swagger UI's assets come from the installation (a registry package), not a CDN: the
        # page works without internet.
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' href='{DOCS_ASSETS}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(
                    type="http", scheme="bearer", description="An orgplane API key (opk_...)"
                ),
                **dialect_openapi.SECURITY_SCHEMES,
            }
        ),
        security=[{"ApiKey": []}],
        tags=[
            Tag(name="organizations", description="The organization tree"),
            Tag(name="api keys", description="Scoped API keys, shown once, stored hashed"),
            Tag(name="logs", description="Audit trail (hash-chained) and access log"),
            Tag(
                name="events",
                description="Every audited change as an event: polled (keyset) or streamed "
                "(Server-Sent Events)",
            ),
            Tag(
                name="alerts",
                description="Usage thresholds that fire usage.threshold_crossed once per period",
            ),
            Tag(name="customizations", description="Per-org customization documents"),
            Tag(name="consumption", description="Monthly consumption per meter"),
            Tag(name="usage", description="Usage ingestion: batches of metered events"),
            Tag(name="sign-in", description="Sessions for people: login, logout, resets"),
            Tag(
                name="two-factor",
                description="The signed-in user's second factor: TOTP and recovery codes",
            ),
            Tag(name="users", description="Members, invitations"),
            Tag(
                name="webhooks",
                description="Endpoints that receive the org's events (Standard Webhooks), "
                "their delivery logs, redelivery",
            ),
            Tag(name="roles", description="Capabilities and roles"),
            Tag(name="operations", description="Health, readiness, metrics"),
            Tag(name="datadog", description="Datadog's org-management API, under /datadog"),
            Tag(name="make", description="Make's organizations API, under /make/api/v2"),
            Tag(name="sumologic", description="Sumo Logic's API, under /sumologic/api"),
            Tag(
                name="SCIM",
                description="SCIM 2.0 (RFC 7643/7644) under /scim/v2: the key's organization's "
                "members as Users, its roles as Groups; errors in SCIM's Error",
            ),
        ],
    )

    @get("/openapi.json", include_in_schema=False, media_type="application/json")
    async def openapi_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return request.app.openapi_schema.to_schema()

    def provide_services(state: State) -> Services:
        services: Services = state.services
        return services

    app = Litestar(
        route_handlers=[
            orgs.router,
            keys.router,
            logs.router,
            events.router,
            alerts.router,
            customizations.router,
            customizations.customizations_schema,
            consumption.router,
            credits.router,
            meters.router,
            usage.router,
            users.router,
            users.accept_invitation,
            roles.router,
            roles.list_capabilities,
            auth_api.router,
            mfa.router,
            webhooks.router,
            scim_router,
            datadog_dialect.router,
            make_dialect.router,
            sumologic_dialect.router,
            ops.healthz,
            ops.readyz,
            ops.metrics,
            ops.me,
            openapi_json,
            console.front_door,
            console.console_router(services.settings),
            create_static_files_router(
                path=DOCS_ASSETS,
                directories=[swagger_ui_path],
                include_in_schema=False,
                name="docs-assets",
            ),
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal),
            "actor": Provide(provide_actor, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=reject_nul,
        before_send=[add_rate_limit_headers],
        openapi_config=openapi,
        template_config=console.TEMPLATES,
        lifespan=[lifespan],
        state=State({"services": services}),
        request_class=OrgplaneRequest,
        request_max_body_size=services.settings.max_body_bytes,
        debug=False,
    )
    agree_on_allow(app)
    return app


def create_app(settings: Settings | None = None, services: Services | None = None) -> Any:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    services = services or build_services(settings)
    return bind(create_litestar(services), services)


def bind(app: Litestar, services: Services) -> Any:
    """The ASGI application serving ``app`` with ``services``: what ``create_app`` returns.

    Building the Litestar application is the expensive part (~0.3 s: every handler's signature
    is modelled); the test suite builds one per set of settings and binds each test's services
    to it.
    """
    app.state.services = services
    inner: Any = FastReads(app, services) if services.settings.fast_reads else app
    wrapped = ObservabilityMiddleware(inner, services.metrics)
    wrapped.litestar = app  # type: ignore[attr-defined]
    wrapped.services = services  # type: ignore[attr-defined]
    return wrapped
