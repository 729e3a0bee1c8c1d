"""An org's webhooks: create one (its signing secret shown once, on the answer to the form),
list them with how their last delivery went, edit, enable or disable, rotate the secret, send
a test event, delete; each webhook's delivery log, and redelivery of one event or a time range.

Every read is a core query and every change one core command (core/webhooks/service.py, the
same the API calls); a refusal is shown on the form where the person acted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from orgplane.api.deps import ServicesDep
from orgplane.console.render import page, refusal
from orgplane.console.session import PATH, CallerDep, OrgId, ViewerDep
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput, OrgplaneError
from orgplane.core.orgs import queries
from orgplane.core.webhooks import service as webhooks
from orgplane.core.webhooks.sender import Sender

WebhookRef = Annotated[str, PathParameter(description="A webhook's id", max_length=64)]
WEBHOOKS_PAGE = 100
LOG_PAGE = 50
# How long the current secret keeps signing after a rotation: the choices the form offers.
OVERLAPS = {"0": "Stop at once", "3600": "1 hour", "86400": "24 hours", "604800": "7 days"}


def _patterns(text: str) -> list[str]:
    """Event type patterns typed one per line or separated by commas."""
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def _draft(form: Any) -> dict[str, Any]:
    """A webhook's form as typed (shown again with a refusal)."""
    return {
        "url": str(form.get("url", "")).strip(),
        "event_types": str(form.get("event_types", "")),
        "include_descendants": form.get("include_descendants") == "1",
        "description": str(form.get("description", "")),
    }


def _base(org_id: str, webhook_id: str | None = None) -> str:
    url = f"{PATH}/orgs/{org_id}/webhooks"
    return f"{url}/{webhook_id}" if webhook_id else url


async def _list_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="webhooks:read")
        trail = await queries.lineage(conn, viewer, org)
        rows, more = await webhooks.list_webhooks(
            conn, viewer, org_id, limit=WEBHOOKS_PAGE, cursor=request.query_params.get("cursor")
        )
        last = await webhooks.last_attempts(conn, viewer, org_id, rows)
    return page(
        request, viewer, "webhooks.html", status_code=status_code, org=org, trail=trail,
        tab="webhooks", webhooks=rows, last=last, next_cursor=more, **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/webhooks", name="console:webhooks")
async def webhooks_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _list_page(request, services, viewer, org_id)


@post("/orgs/{org_id:str}/webhooks", status_code=200)
async def create_webhook(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
) -> Template:
    form = await request.form()
    draft = _draft(form)
    try:
        created = await services.db.transaction(
            webhooks.create, actor=caller, org_ref=org_id, url=draft["url"],
            event_types=_patterns(draft["event_types"]),
            include_descendants=draft["include_descendants"],
            description=draft["description"], networks=services.settings.webhook_networks,
            secret_key=services.settings.secret_key,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _list_page(
            request, services, viewer, org_id, status_code=exc.status, error=refusal(exc),
            draft=draft,
        )  # fmt: skip
    return await _list_page(
        request, services, viewer, org_id, status_code=201, created=created.row,
        secret=created.secret,
    )  # fmt: skip


async def _webhook_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: str,
    webhook_id: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """A webhook: its settings and actions, and its delivery log, newest first."""
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="webhooks:read")
        trail = await queries.lineage(conn, viewer, org)
        hook = await webhooks.get(conn, viewer, org_id, webhook_id)
        attempts, older = await webhooks.attempts(
            conn, viewer, org_id, webhook_id, limit=LOG_PAGE,
            cursor=request.query_params.get("cursor"),
        )  # fmt: skip
    return page(
        request, viewer, "webhook.html", status_code=status_code, org=org, trail=trail,
        tab="webhooks", hook=hook, attempts=attempts, older=older, overlaps=OVERLAPS,
        **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/webhooks/{webhook_id:str}", name="console:webhook")
async def webhook_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template:
    return await _webhook_page(request, services, viewer, org_id, webhook_id)


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}", status_code=303)
async def edit_webhook(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template | Redirect:
    form = await request.form()
    draft = _draft(form)
    changes = {**draft, "event_types": _patterns(draft["event_types"])}
    try:
        await services.db.transaction(
            webhooks.update, actor=caller, org_ref=org_id, webhook_ref=webhook_id,
            changes=changes, networks=services.settings.webhook_networks,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            edit_error=refusal(exc), draft=draft,
        )  # fmt: skip
    return Redirect(f"{_base(org_id, webhook_id)}?saved=1", status_code=303)


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}/enabled", status_code=303)
async def enable_webhook(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template | Redirect:
    """Enable (``enabled=1``) or disable (``enabled=0``) the webhook."""
    enabled = (await request.form()).get("enabled") == "1"
    try:
        await services.db.transaction(
            webhooks.update, actor=caller, org_ref=org_id, webhook_ref=webhook_id,
            changes={"enabled": enabled}, networks=services.settings.webhook_networks,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            error=refusal(exc),
        )  # fmt: skip
    state = "enabled" if enabled else "disabled"
    return Redirect(f"{_base(org_id, webhook_id)}?{state}=1", status_code=303)


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}/delete", status_code=303)
async def delete_webhook(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template | Redirect:
    try:
        await services.db.transaction(
            webhooks.delete, actor=caller, org_ref=org_id, webhook_ref=webhook_id
        )
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            error=refusal(exc),
        )  # fmt: skip
    return Redirect(f"{_base(org_id)}?deleted={webhook_id}", status_code=303)


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}/rotate", status_code=200)
async def rotate_secret(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template:
    """A new signing secret, shown on the answer to the form only."""
    overlap = str((await request.form()).get("overlap", "86400"))
    try:
        if overlap not in OVERLAPS:
            raise InvalidInput.for_field("overlap", f"must be one of {', '.join(OVERLAPS)}")
        created = await services.db.transaction(
            webhooks.rotate_secret, actor=caller, org_ref=org_id, webhook_ref=webhook_id,
            overlap=timedelta(seconds=int(overlap)), secret_key=services.settings.secret_key,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            error=refusal(exc),
        )  # fmt: skip
    return await _webhook_page(
        request, services, viewer, org_id, webhook_id, secret=created.secret,
        previous_until=created.row.previous_secret_expires_at,
    )  # fmt: skip


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}/test", status_code=200)
async def test_webhook(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template:
    """Send a test event now and show how it went (the delivery log shows it too)."""
    settings = services.settings
    sender = Sender.of(settings)
    try:
        event_id, outcome = await webhooks.send_test(
            services.db, sender, actor=caller, org_ref=org_id, webhook_ref=webhook_id,
            secret_key=settings.secret_key,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            error=refusal(exc),
        )  # fmt: skip
    finally:
        await sender.close()
    return await _webhook_page(
        request, services, viewer, org_id, webhook_id, tested=outcome, tested_event=event_id
    )


def _when(form: Any, name: str) -> datetime | None:
    """A ``datetime-local`` field, read as UTC; None when empty."""
    value = str(form.get(name, "")).strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput.for_field(name, "must be a date and time (YYYY-MM-DDTHH:MM)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@post("/orgs/{org_id:str}/webhooks/{webhook_id:str}/redeliver", status_code=303)
async def redeliver(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    webhook_id: WebhookRef,
) -> Template | Redirect:
    """Queue again one event (a button on a log row) or a time range (the since/until form)."""
    form = await request.form()
    event_id = str(form.get("event_id", "")).strip() or None
    draft = {"since": str(form.get("since", "")), "until": str(form.get("until", ""))}
    try:
        since, until = _when(form, "since"), _when(form, "until")
        queued = await services.db.transaction(
            webhooks.redeliver, actor=caller, org_ref=org_id, webhook_ref=webhook_id,
            event_id=event_id, since=since, until=until,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _webhook_page(
            request, services, viewer, org_id, webhook_id, status_code=exc.status,
            redeliver_error=refusal(exc), redeliver_draft=draft,
        )  # fmt: skip
    return Redirect(f"{_base(org_id, webhook_id)}?queued={queued}", status_code=303)
