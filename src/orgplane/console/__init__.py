"""The web console: server-rendered pages for the people who run a tree of orgs, at /console.

One more surface on the core: it parses forms, calls the same core queries and commands as the
API in one transaction each, and renders HTML (Jinja2 templates, SVG charts drawn on the
server, a little JavaScript of its own that only enhances). It holds no business rule and no
SQL. A person signs in with email and password and sees what their roles reach, through the
same reach check and capabilities as an API request; a control that would be refused is not
shown.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from orgplane.config import Settings
from orgplane.console import account, alerts, bars, keys, logs, orgs, people, sign_in, webhooks
from orgplane.console.render import error_page
from orgplane.console.session import (
    PATH,
    SignInRequired,
    csrf_config,
    provide_caller,
    provide_viewer,
    to_sign_in,
)
from orgplane.core.errors import OrgplaneError

HERE = Path(__file__).parent


def _globals(engine: JinjaTemplateEngine) -> None:
    engine.engine.globals["bar"] = bars.bar


TEMPLATES = TemplateConfig(
    directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_globals
)


@get("/", include_in_schema=False)
async def front_door() -> Redirect:
    """The installation's address leads people to the console."""
    return Redirect(PATH)


def console_router(settings: Settings) -> Router:
    return Router(
        path=PATH,
        route_handlers=[
            sign_in.sign_in_page,
            sign_in.sign_in,
            sign_in.sign_out,
            account.account,
            account.enrol,
            account.confirm,
            account.disable,
            orgs.home,
            orgs.tree,
            orgs.overview,
            orgs.edit,
            orgs.children_fragment,
            orgs.consumption_page,
            orgs.allocations_page,
            orgs.allocate,
            orgs.move,
            orgs.delete_page,
            orgs.delete,
            orgs.restore,
            people.people_page,
            people.invite,
            people.change,
            people.invitation_page,
            people.accept,
            keys.keys_page,
            keys.create_key,
            keys.revoke_key,
            webhooks.webhooks_page,
            webhooks.create_webhook,
            webhooks.webhook_page,
            webhooks.edit_webhook,
            webhooks.enable_webhook,
            webhooks.delete_webhook,
            webhooks.rotate_secret,
            webhooks.test_webhook,
            webhooks.redeliver,
            alerts.alerts_page,
            alerts.set_alert,
            alerts.delete_alert,
            logs.log_page,
            logs.log_csv,
            create_static_files_router(
                path="/static", directories=[HERE / "static"], name="console:static"
            ),
        ],
        dependencies={
            "viewer": Provide(provide_viewer),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf_config(settings))],
        exception_handlers={SignInRequired: to_sign_in, OrgplaneError: error_page},
        include_in_schema=False,
    )
