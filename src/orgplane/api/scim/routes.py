"""SCIM 2.0 endpoints: discovery, Users (members of the key's org) and Groups (its roles).

Models, filters and PATCH semantics come from ``scim2-models``; every change goes through the
core (``core.people``), which checks reach and scopes and audits in the same transaction.
The endpoints live in ``users``, ``groups`` and ``discovery``; this module mounts them, under
the "SCIM" tag of the OpenAPI document. What no route answers (no route, a 405, a 500) is
answered in SCIM's Error by the application's handlers (``api.surfaces``).
"""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from pydantic import ValidationError
from scim2_models import SCIMException

from orgplane.api.scim.common import (
    BASE,
    handle_http,
    handle_invalid_model,
    handle_orgplane_error,
    handle_scim_error,
    handle_validation,
    provide_listing,
)
from orgplane.api.scim.discovery import (
    get_resource_type,
    get_schema,
    list_resource_types,
    list_schemas,
    service_provider_config,
)
from orgplane.api.scim.groups import (
    create_group,
    delete_group,
    get_group,
    list_groups,
    patch_group,
    replace_group,
)
from orgplane.api.scim.openapi import SECURITY
from orgplane.api.scim.search import search_all
from orgplane.api.scim.users import (
    create_user,
    delete_user,
    get_user,
    list_users,
    patch_user,
    replace_user,
    search_users,
)
from orgplane.core.errors import OrgplaneError

router = Router(
    path=BASE,
    route_handlers=[
        service_provider_config,
        list_resource_types,
        get_resource_type,
        list_schemas,
        get_schema,
        list_users,
        search_users,
        search_all,
        get_user,
        create_user,
        replace_user,
        patch_user,
        delete_user,
        list_groups,
        get_group,
        create_group,
        replace_group,
        patch_group,
        delete_group,
    ],
    dependencies={"q": Provide(provide_listing, sync_to_thread=False)},
    tags=["SCIM"],
    security=SECURITY,
    exception_handlers={
        OrgplaneError: handle_orgplane_error,
        SCIMException: handle_scim_error,
        ValidationException: handle_validation,
        ValidationError: handle_invalid_model,
        HTTPException: handle_http,
    },
)
