"""SCIM discovery: ServiceProviderConfig, ResourceTypes, Schemas."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    Filter,
    Group,
    Meta,
    NotFoundException,
    Patch,
    ResourceType,
    ServiceProviderConfig,
    Sort,
    User,
)

from orgplane.api.deps import PrincipalDep
from orgplane.api.scim.common import (
    BASE,
    PAGE_MAX,
    SchemaRef,
    _dump,
    _list_response,
    _respond,
)
from orgplane.api.scim.openapi import scim
from orgplane.api.scim.shapes import (
    ScimResourceType,
    ScimResourceTypeList,
    ScimSchema,
    ScimSchemaList,
    ScimServiceProviderConfig,
)

# --- Discovery --------------------------------------------------------------------------------

RESOURCES: dict[str, Any] = {"User": User, "Group": Group}


def _service_provider_config(request: Request[Any, Any, Any]) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=PAGE_MAX),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="API key",
                description="An orgplane API key (users:read / users:write) as a Bearer token",
                primary=True,
            )
        ],
        meta=Meta(
            resource_type="ServiceProviderConfig",
            location=f"{str(request.base_url).rstrip('/')}{BASE}/ServiceProviderConfig",
        ),
    )


def _resource_type(request: Request[Any, Any, Any], name: str) -> ResourceType:
    rt = ResourceType.from_resource(RESOURCES[name])
    rt.meta = Meta(
        resource_type="ResourceType",
        location=f"{str(request.base_url).rstrip('/')}{BASE}/ResourceTypes/{name}",
    )
    return rt


# What orgplane stores: the schema published for each resource names these attributes only
# (and, for complex ones, these sub-attributes), with the mutability orgplane gives them.
SUPPORTED: dict[str, dict[str, Any]] = {
    "User": {
        "userName": ("immutable", None),  # the email; changed only through the native API
        "name": (None, {"givenName", "familyName"}),
        "title": (None, None),
        "active": ("required", None),  # always known: defaults to true on creation
        "emails": ("readOnly", None),  # mirrors userName
        "groups": ("readOnly", None),
    },
    "Group": {"displayName": (None, None), "members": ("members", {"value", "$ref", "type"})},
}


def _trimmed(model: Any, name: str) -> Any:
    schema = model.to_schema()
    kept = []
    for attr in schema.attributes or []:
        if attr.name not in SUPPORTED[name]:
            continue
        mutability, subs = SUPPORTED[name][attr.name]
        if mutability == "required":
            attr.required = True
        elif mutability == "members":  # only the member's id is written; the rest is derived
            for sub in attr.sub_attributes or []:
                if sub.name == "type":
                    sub.mutability = "readOnly"
        elif mutability:
            attr.mutability = mutability
            for sub in attr.sub_attributes or []:
                sub.mutability = mutability
        if subs is not None:
            attr.sub_attributes = [a for a in attr.sub_attributes or [] if a.name in subs]
        kept.append(attr)
    schema.attributes = kept
    return schema


def _schemas(request: Request[Any, Any, Any]) -> list[Any]:
    out = []
    for name, model in RESOURCES.items():
        schema = _trimmed(model, name)
        schema.meta = Meta(
            resource_type="Schema",
            location=f"{str(request.base_url).rstrip('/')}{BASE}/Schemas/{schema.id}",
        )
        out.append(schema)
    return out


@get("/ServiceProviderConfig", **scim("Get the service provider's configuration"))
async def service_provider_config(
    request: Request[Any, Any, Any], principal: PrincipalDep
) -> Response[ScimServiceProviderConfig]:
    return _respond(_dump(_service_provider_config(request)))


@get("/ResourceTypes", **scim("List resource types"))
async def list_resource_types(
    request: Request[Any, Any, Any], principal: PrincipalDep
) -> Response[ScimResourceTypeList]:
    items = [_resource_type(request, n) for n in RESOURCES]
    return _respond(_list_response(items, len(items), 1))


@get("/ResourceTypes/{name:str}", **scim("Get a resource type"))
async def get_resource_type(
    request: Request[Any, Any, Any], name: SchemaRef, principal: PrincipalDep
) -> Response[ScimResourceType]:
    if name not in RESOURCES:
        raise NotFoundException(detail=f"resource type {name!r} not found")
    return _respond(_dump(_resource_type(request, name)))


@get("/Schemas", **scim("List schemas"))
async def list_schemas(
    request: Request[Any, Any, Any], principal: PrincipalDep
) -> Response[ScimSchemaList]:
    items = _schemas(request)
    return _respond(_list_response(items, len(items), 1))


@get("/Schemas/{schema_id:str}", **scim("Get a schema"))
async def get_schema(
    request: Request[Any, Any, Any], schema_id: SchemaRef, principal: PrincipalDep
) -> Response[ScimSchema]:
    for schema in _schemas(request):
        if schema.id == schema_id:
            return _respond(_dump(schema))
    raise NotFoundException(detail=f"schema {schema_id!r} not found")
