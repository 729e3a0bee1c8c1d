"""Per-org customizations: a JSON document checked against a published JSON Schema.

``PUT`` replaces the document; ``PATCH`` merges into it per RFC 7396 (``null`` removes a member).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from orgplane.core.access.principal import Caller
from orgplane.core.access.service import reach
from orgplane.core.errors import FieldError, InvalidInput
from orgplane.core.orgs import service as org_service
from orgplane.core.orgs.validation import clean_document
from orgplane.db.engine import Tx


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("orgplane.core.customizations").joinpath("schema.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(document: Any, field: str = "customizations") -> dict[str, Any]:
    document = clean_document(document, field)
    problems = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    errors = [error for e in problems for error in _field_errors(e, field)]
    if errors:
        raise InvalidInput("customizations do not match the schema", errors=errors)
    return document


def _field_errors(error: ValidationError, field: str) -> list[FieldError]:
    """Name the bad member itself: an unknown key is reported at its own path, not its parent's."""
    where = ".".join([field, *(str(p) for p in error.absolute_path)])
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        unknown = [k for k in error.instance if k not in known]
        allowed = ", ".join(known) or "none"
        return [FieldError(f"{where}.{k}", f"unknown member; allowed: {allowed}") for k in unknown]
    return [FieldError(where, error.message)]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


async def replace(
    tx: Tx, actor: Caller, org_ref: str, document: Any, *, if_match: str | None = None
) -> Any:
    # Reach and scope first: a caller who may not write here learns nothing from validation.
    row = await reach(
        tx.conn,
        actor.principal,
        org_ref,
        scope="orgs:write",
        capability="manageCustomizations",
        lock="update",
    )
    org_service.check_if_match(row, if_match)
    document = validate(document)
    return await org_service.apply_changes(tx, actor, row, {"customizations": document})


async def patch(
    tx: Tx, actor: Caller, org_ref: str, changes: Any, *, if_match: str | None = None
) -> Any:
    row = await reach(
        tx.conn,
        actor.principal,
        org_ref,
        scope="orgs:write",
        capability="manageCustomizations",
        lock="update",
    )
    org_service.check_if_match(row, if_match)
    if not isinstance(changes, dict):
        raise InvalidInput.for_field("body", "a merge patch must be a JSON object")
    document = validate(merge_patch(row.customizations, changes))
    return await org_service.apply_changes(tx, actor, row, {"customizations": document})
