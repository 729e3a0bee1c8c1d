"""Datadog v1 organizations: list, create a child, get, update, IdP metadata, downgrade."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Request, get, post, put
from litestar.datastructures import UploadFile
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, Schema
from litestar.openapi.spec.request_body import RequestBody
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.datadog import shapes
from orgplane.api.dialects.datadog.errors import ERRORS
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import FieldError, InvalidInput
from orgplane.core.orgs import managed
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs import service as org_service
from orgplane.core.orgs import settings as org_settings
from orgplane.core.orgs.saml import MAX_METADATA_BYTES
from orgplane.db.engine import Reader
from orgplane.models.base import utcnow

PublicId = Annotated[str, PathParameter(description="The org's public id", max_length=64)]
V1Name = Annotated[str, Meta(max_length=shapes.V1_NAME_MAX)]
TypeName = Annotated[str, Meta(max_length=64)]
# orgplane's field names in Datadog's words, for error messages.
FIELD_NAMES = {"plan": "subscription.type", "settings": "settings"}
LIST_BATCH = 500
LIST_MAX = 10_000


class TypeField(Struct):
    type: TypeName


class Enabled(Struct):
    enabled: bool = False


class Domains(Struct):
    domains: Annotated[list[Annotated[str, Meta(max_length=253)]], Meta(max_length=50)] = []
    enabled: bool = False


class SettingsIn(Struct, omit_defaults=True):
    """The writable part of Datadog's ``OrganizationSettings``; the SAML read-only fields
    (``saml_can_be_enabled``, ``saml_idp_endpoint``, ...) are derived and ignored on input."""

    private_widget_share: bool | UnsetType = UNSET
    saml: Enabled | UnsetType = UNSET
    saml_autocreate_access_role: Literal["st", "adm", "ro"] | UnsetType = UNSET
    saml_autocreate_users_domains: Domains | UnsetType = UNSET
    saml_idp_initiated_login: Enabled | UnsetType = UNSET
    saml_strict_mode: Enabled | UnsetType = UNSET


class OrgCreateBody(Struct):
    name: V1Name
    billing: TypeField | None = None
    subscription: TypeField | None = None


class OrgUpdateBody(Struct):
    name: V1Name | UnsetType = UNSET
    description: str | UnsetType = UNSET
    settings: SettingsIn | UnsetType = UNSET
    billing: TypeField | UnsetType = UNSET
    subscription: TypeField | UnsetType = UNSET


def datadog_base(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/") + "/datadog"


def _in_datadog_words(exc: InvalidInput) -> InvalidInput:
    errors = [FieldError(FIELD_NAMES.get(e.field, e.field), e.message) for e in exc.errors]
    return InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


def _settings_changes(settings: SettingsIn | UnsetType) -> dict[str, Any]:
    if isinstance(settings, UnsetType):
        return {}
    out: dict[str, Any] = {}
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if isinstance(value, UnsetType):
            continue
        if isinstance(value, Struct):
            value = {f: getattr(value, f) for f in value.__struct_fields__}
        out[name] = value
    return out


async def _subtree(conn: Reader, principal: Principal) -> list[Any]:
    own = await reach(conn, principal, principal.org_public_id, scope="orgs:read")
    rows = [own]
    cursor = None
    while len(rows) < LIST_MAX:
        page = await org_queries.list_descendants(
            conn, principal, own.public_id, limit=LIST_BATCH, cursor=cursor
        )
        rows.extend(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    return rows[:LIST_MAX]


@get("/api/v1/org", summary="List your managed organizations (v1)", responses=ERRORS)
async def list_orgs(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    async with services.db.read() as conn:
        rows = await _subtree(conn, principal)
    return {"orgs": [shapes.v1_org(r) for r in rows]}


def _child_fields(body: OrgCreateBody) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": body.name}
    if body.subscription is not None:
        fields["plan"] = body.subscription.type
    if body.billing is not None:
        fields["settings"] = {"billing": {"type": body.billing.type}}
    return fields


@post(
    "/api/v1/org",
    summary="Create a child organization",
    status_code=200,
    responses=ERRORS,
    description="The new org is a child of the key's org; a `datadog` key with the caller's "
    "scopes is minted for it (its API and application keys are shown in this response only).",
)
async def create_child_org(
    data: JSONBody[OrgCreateBody], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    try:
        # Datadog makes the user behind the application key an administrator of the new org;
        # the key takes the caller's scopes and expiry.
        created = await services.db.transaction(
            managed.create_managed,
            actor=actor,
            parent_ref=actor.principal.org_public_id,
            fields=_child_fields(data),
            max_depth=services.settings.max_tree_depth,
            creator_role="administrator",
            key=managed.NewKey(name=f"{data.name} (Datadog)", kind="datadog"),
        )
    except InvalidInput as exc:
        raise _in_datadog_words(exc) from None
    child, key = created.org, created.key
    assert key is not None  # asked for above
    member = created.owner.member if created.owner is not None else None
    created = key.row.created_at.strftime("%Y-%m-%d %H:%M:%S")
    owner = member.row.email if member is not None else actor.label
    out: dict[str, Any] = {
        "org": shapes.v1_org(child),
        "api_key": {
            "key": key.vendor["api_key"],
            "name": key.row.name,
            "created": created,
            "created_by": actor.label,
        },
        "application_key": {
            "hash": key.vendor["application_key"],
            "name": key.row.name,
            "owner": owner,
        },
    }
    if member is not None:
        out["user"] = shapes.v1_user(member)
    return out


@get("/api/v1/org/{public_id:str}", summary="Get organization information", responses=ERRORS)
async def get_org(public_id: PublicId, services: ServicesDep, principal: PrincipalDep) -> Any:
    async with services.db.read() as conn:
        row = await reach(conn, principal, public_id, scope="orgs:read")
    return {"org": shapes.v1_org(row)}


def _update_changes(body: OrgUpdateBody) -> tuple[dict[str, Any], dict[str, Any]]:
    """The org's fields and the settings' keys a v1 update sets (what the caller sent)."""
    changes: dict[str, Any] = {}
    if not isinstance(body.name, UnsetType):
        changes["name"] = body.name
    if not isinstance(body.description, UnsetType):
        changes["description"] = body.description
    if not isinstance(body.subscription, UnsetType):
        changes["plan"] = body.subscription.type
    settings = _settings_changes(body.settings)
    if not isinstance(body.billing, UnsetType):
        settings["billing"] = {"type": body.billing.type}
    return changes, settings


@put("/api/v1/org/{public_id:str}", summary="Update your organization", responses=ERRORS)
async def update_org(
    public_id: PublicId, data: JSONBody[OrgUpdateBody], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    changes, settings = _update_changes(data)
    try:
        row = await services.db.transaction(
            org_service.update,
            actor=actor,
            org_ref=public_id,
            changes=changes,
            merge_settings=settings,
        )
    except InvalidInput as exc:
        raise _in_datadog_words(exc) from None
    return {"org": shapes.v1_org(row)}


@dataclass
class _IdpUploadOperation(Operation):
    """The upload's body in the document: the handler reads the form itself, after the key
    check, so Litestar cannot describe it."""

    def __post_init__(self) -> None:
        file_part = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            required=True,
            description="The identity provider's SAML 2.0 metadata XML as the file part idp_file",
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={"idp_file": file_part},
                        required=["idp_file"],
                    )
                )
            },
        )


async def _idp_document(request: Request[Any, Any, Any]) -> bytes:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput.for_field("idp_file", "send it as multipart/form-data")
    form = await request.form()
    upload = form.get("idp_file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput.for_field("idp_file", "is required (a file part named idp_file)")
    document = await upload.read(MAX_METADATA_BYTES + 1)
    await upload.close()
    return document


@post(
    "/api/v1/org/{public_id:str}/idp_metadata",
    summary="Upload IdP metadata",
    status_code=200,
    responses=ERRORS,
    description="multipart/form-data with one file part `idp_file`: the identity provider's "
    "SAML 2.0 metadata XML (DTDs and entities refused). Its entity id, single sign-on URL and "
    "certificates are kept in the org's settings (`saml_idp_metadata`).",
    operation_class=_IdpUploadOperation,
)
async def upload_idp_for_org(
    public_id: PublicId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await reach(conn, actor.principal, public_id, scope="orgs:write")
    document = await _idp_document(request)
    await services.db.transaction(
        org_settings.store_idp_metadata,
        actor=actor,
        org_ref=public_id,
        document=document,
        now=utcnow(),
    )
    return {"message": f"IdP metadata successfully uploaded for {org.name}"}


@post(
    "/api/v1/org/{public_id:str}/downgrade",
    summary="Downgrade a child organization",
    status_code=200,
    responses=ERRORS,
    description="Datadog takes the child out of the parent's management and puts it on a trial. "
    "orgplane keeps the tree, so the child's plan becomes `trial` and it is deactivated: its "
    "unused allocations return to the parent and its keys stop working.",
)
async def downgrade_org(public_id: PublicId, services: ServicesDep, actor: ActorDep) -> Any:
    await services.db.transaction(
        org_service.update,
        actor=actor,
        org_ref=public_id,
        changes={"plan": "trial", "status": "deactivated"},
    )
    return {"message": f"Child organization {public_id} downgraded successfully"}


HANDLERS = [list_orgs, create_child_org, get_org, update_org, upload_idp_for_org, downgrade_org]
