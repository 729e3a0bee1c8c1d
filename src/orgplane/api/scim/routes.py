"""SCIM 2.0 endpoints: discovery, Users (members of the key's org) and Groups (its roles).

Models, filters and PATCH semantics come from ``scim2-models``; every change goes through the
core (``core.people``), which checks reach and scopes and audits in the same transaction.
The endpoints live in ``users``, ``groups`` and ``discovery``; this module mounts them.
"""

from __future__ import annotations

from litestar import Router
from litestar.exceptions import HTTPException, ValidationException
from pydantic import ValidationError
from scim2_models import SCIMException

from orgplane.api.scim.common import (
    BASE,
    handle_http,
    handle_orgplane_error,
    handle_scim_error,
    handle_unexpected,
    handle_validation,
)
from orgplane.api.scim.discovery import (
    get_resource_type,
    get_schema,
    list_resource_types,
    list_schemas,
    service_provider_config,
    unknown,
)
from orgplane.api.scim.groups import (
    create_group,
    delete_group,
    get_group,
    list_groups,
    patch_group,
    replace_group,
)
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
        unknown,
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
    exception_handlers={
        OrgplaneError: handle_orgplane_error,
        SCIMException: handle_scim_error,
        ValidationException: handle_validation,
        ValidationError: handle_validation,
        HTTPException: handle_http,
        Exception: handle_unexpected,
    },
)
