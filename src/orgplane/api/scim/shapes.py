"""SCIM's shapes (RFC 7643/7644) as orgplane reads and writes them: the bodies of requests and
responses, which Litestar turns into the schemas of the OpenAPI document.

Users and groups are parsed and rendered by ``scim2-models`` (SCIM's attribute names are
case-insensitive); these structs describe the same JSON, with the attributes orgplane keeps and
publishes under ``/Schemas``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar.openapi.spec import OpenAPIFormat
from litestar.params import KwargDefinition
from msgspec import UNSET, Struct, UnsetType, field


def _read_only(description: str) -> KwargDefinition:
    return KwargDefinition(read_only=True, description=description)


Schemas = Annotated[list[str], KwargDefinition(description="The URNs of the schemas used")]
Uri = Annotated[str, KwargDefinition(format=OpenAPIFormat.URI)]


class ScimError(Struct, kw_only=True):
    """SCIM's error (RFC 7644 §3.12): every 4xx and 5xx under /scim/v2."""

    schemas: list[Literal["urn:ietf:params:scim:api:messages:2.0:Error"]]
    status: Annotated[str, KwargDefinition(description="The HTTP status code, as a string")]
    detail: str
    scimType: Annotated[
        str | UnsetType,
        KwargDefinition(
            description="A detail error keyword of RFC 7644 §3.12 (`invalidFilter`, "
            "`invalidValue`, `invalidSyntax`, `mutability`, `uniqueness`, ...)"
        ),
    ] = UNSET


class ScimMeta(Struct, kw_only=True):
    resourceType: str
    location: Uri
    created: datetime | UnsetType = UNSET
    lastModified: datetime | UnsetType = UNSET
    version: Annotated[
        str | UnsetType, KwargDefinition(description='A weak ETag, `W/"<n>"` (users)')
    ] = UNSET


class ScimName(Struct, kw_only=True):
    givenName: str | UnsetType = UNSET
    familyName: str | UnsetType = UNSET


class ScimEmail(Struct, kw_only=True):
    value: str
    type: str
    primary: bool


class ScimUserGroup(Struct, kw_only=True):
    """A role the user holds in the key's organization."""

    value: str
    ref: Uri = field(name="$ref")
    display: str
    type: Literal["direct"]


class ScimUser(Struct, kw_only=True):
    """A member of the key's organization (RFC 7643 §4.1), with the attributes orgplane keeps.

    Other attributes of the core User schema are accepted and not kept; attributes of other
    schemas (extensions) are refused. Attribute names are case-insensitive.
    """

    schemas: Schemas | UnsetType = UNSET
    id: Annotated[str | UnsetType, _read_only("The user's id (usr_...)")] = UNSET
    userName: Annotated[
        str,
        KwargDefinition(
            description="The user's email address, unique in the installation; set on "
            "creation, then changed only through the native API"
        ),
    ]
    name: ScimName | UnsetType = UNSET
    title: str | UnsetType = UNSET
    active: Annotated[
        bool | UnsetType,
        KwargDefinition(description="false disables the member; true on creation if absent"),
    ] = UNSET
    emails: Annotated[
        list[ScimEmail] | UnsetType, _read_only("The user's email address (userName)")
    ] = UNSET
    groups: Annotated[
        list[ScimUserGroup] | UnsetType,
        _read_only("The user's roles; change them through the group's members"),
    ] = UNSET
    meta: Annotated[ScimMeta | UnsetType, _read_only("Resource metadata")] = UNSET


class ScimMember(Struct, kw_only=True):
    value: Annotated[str, KwargDefinition(description="The member's user id (usr_...)")]
    ref: Annotated[Uri | UnsetType, _read_only("The member's URL")] = field(
        name="$ref", default=UNSET
    )
    type: Annotated[Literal["User"] | UnsetType, _read_only("Always User")] = UNSET


class ScimGroup(Struct, kw_only=True):
    """A role of the key's organization (RFC 7643 §4.2) and the users who hold it.

    Attribute names are case-insensitive.
    """

    schemas: Schemas | UnsetType = UNSET
    id: Annotated[str | UnsetType, _read_only("The role's id (rol_...) or a system role's key")] = (
        UNSET
    )
    displayName: Annotated[str, KwargDefinition(description="The role's name")]
    members: list[ScimMember] | UnsetType = UNSET
    meta: Annotated[ScimMeta | UnsetType, _read_only("Resource metadata")] = UNSET


class ScimListResponse(Struct, kw_only=True):
    """A page of resources (RFC 7644 §3.4.2): ``startIndex`` is 1-based."""

    schemas: list[Literal["urn:ietf:params:scim:api:messages:2.0:ListResponse"]]
    totalResults: int
    startIndex: int
    itemsPerPage: int


class ScimUserList(ScimListResponse, kw_only=True):
    Resources: list[ScimUser]


class ScimGroupList(ScimListResponse, kw_only=True):
    Resources: list[ScimGroup]


class ScimSearchResults(ScimListResponse, kw_only=True):
    Resources: Annotated[
        list[dict[str, Any]],
        KwargDefinition(description="Users (ScimUser) first, then groups (ScimGroup)"),
    ]


# Discovery (RFC 7643 §5-7)


class ScimSupported(Struct, kw_only=True):
    supported: bool


class ScimBulkSupport(ScimSupported, kw_only=True):
    maxOperations: int
    maxPayloadSize: int


class ScimFilterSupport(ScimSupported, kw_only=True):
    maxResults: int


class ScimAuthenticationScheme(Struct, kw_only=True):
    type: str
    name: str
    description: str
    primary: bool


class ScimServiceProviderConfig(Struct, kw_only=True):
    schemas: Schemas
    meta: ScimMeta
    patch: ScimSupported
    bulk: ScimBulkSupport
    filter: ScimFilterSupport
    changePassword: ScimSupported
    sort: ScimSupported
    etag: ScimSupported
    authenticationSchemes: list[ScimAuthenticationScheme]


class ScimResourceType(Struct, kw_only=True):
    schemas: Schemas
    id: str
    meta: ScimMeta
    name: str
    description: str
    endpoint: str
    schema: Annotated[str, KwargDefinition(description="The URN of the resource's schema")]


class ScimResourceTypeList(ScimListResponse, kw_only=True):
    Resources: list[ScimResourceType]


class ScimAttribute(Struct, kw_only=True):
    """An attribute's definition (RFC 7643 §7)."""

    name: str
    type: str
    multiValued: bool
    description: str
    required: bool
    caseExact: bool
    mutability: str
    returned: str
    uniqueness: str
    canonicalValues: list[str] | UnsetType = UNSET
    referenceTypes: list[str] | UnsetType = UNSET
    subAttributes: list[ScimAttribute] | UnsetType = UNSET


class ScimSchema(Struct, kw_only=True):
    """A resource's schema: the attributes orgplane keeps, with the mutability it gives them."""

    schemas: Schemas
    id: str
    meta: ScimMeta
    name: str
    description: str
    attributes: list[ScimAttribute]


class ScimSchemaList(ScimListResponse, kw_only=True):
    Resources: list[ScimSchema]
