"""The rules an org's fields obey, whichever surface the change comes through."""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson

from orgplane.core.errors import FieldError, InvalidInput
from orgplane.models.orgs import PLANS

DEPLOYMENTS = ("au", "ca", "ch", "de", "eu", "fed", "in", "jp", "kr", "us1", "us2")
SETTABLE_STATUSES = ("active", "disabled", "deactivated")
NAME_MAX = 100
DESCRIPTION_MAX = 2000
MAX_TAGS = 50
MAX_DOCUMENT_BYTES = 64 * 1024
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def clean_name(value: Any, field: str = "name", max_length: int = NAME_MAX) -> str:
    if not isinstance(value, str):
        raise InvalidInput.for_field(field, "must be a string")
    name = value.strip()
    if not name:
        raise InvalidInput.for_field(field, "must not be empty")
    if len(name) > max_length:
        raise InvalidInput.for_field(field, f"must be at most {max_length} characters")
    if _has_control(name):
        raise InvalidInput.for_field(field, "must not contain control characters")
    return name


def clean_tags(value: Any, field: str = "tags") -> list[str]:
    if not isinstance(value, list):
        raise InvalidInput.for_field(field, "must be a list of strings")
    if len(value) > MAX_TAGS:
        raise InvalidInput.for_field(field, f"at most {MAX_TAGS} tags")
    errors = [
        FieldError(
            f"{field}[{i}]",
            "must be 'key:value' or 'key' of letters, digits and _.:/@-, "
            "starting with a letter or digit, at most 200 characters",
        )
        for i, tag in enumerate(value)
        if not isinstance(tag, str) or not _TAG.match(tag)
    ]
    if errors:
        raise InvalidInput("invalid tag", errors=errors)
    return sorted(set(value))


def clean_document(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput.for_field(field, "must be a JSON object")
    if len(orjson.dumps(value)) > MAX_DOCUMENT_BYTES:
        raise InvalidInput.for_field(field, f"must encode to at most {MAX_DOCUMENT_BYTES} bytes")
    # PostgreSQL's jsonb cannot store \u0000; refuse it on both databases alike.
    if _has_nul(value):
        raise InvalidInput.for_field(field, "must not contain NUL characters (\\u0000)")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check and normalize the org fields present in ``fields``; raise naming each bad one."""
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in fields.items():
        try:
            out[key] = _clean_one(key, value)
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    return out


def _clean_one(key: str, value: Any) -> Any:
    if key == "name":
        return clean_name(value)
    if key == "description":
        if not isinstance(value, str) or len(value) > DESCRIPTION_MAX:
            raise InvalidInput.for_field(
                key, f"must be a string of at most {DESCRIPTION_MAX} characters"
            )
        if "\x00" in value:
            raise InvalidInput.for_field(key, "must not contain NUL characters")
        return value
    if key == "status":
        if value not in SETTABLE_STATUSES:
            raise InvalidInput.for_field(key, f"must be one of {', '.join(SETTABLE_STATUSES)}")
        return value
    if key == "deployment":
        if value not in DEPLOYMENTS:
            raise InvalidInput.for_field(key, f"must be one of {', '.join(DEPLOYMENTS)}")
        return value
    if key == "country":
        if value is None:
            return None
        if not isinstance(value, str) or not _COUNTRY.match(value.upper()):
            raise InvalidInput.for_field(key, "must be an ISO 3166-1 alpha-2 code such as 'DE'")
        return value.upper()
    if key == "timezone":
        return clean_timezone(value)
    if key == "plan":
        if value not in PLANS:
            raise InvalidInput.for_field(key, f"must be one of {', '.join(PLANS)}")
        return value
    if key == "tags":
        return clean_tags(value)
    if key in ("settings", "customizations"):
        return clean_document(value, key)
    raise InvalidInput.for_field(key, "unknown field")


def clean_timezone(value: Any, field: str = "timezone") -> str:
    if not isinstance(value, str) or value not in _timezones():
        raise InvalidInput.for_field(field, "must be an IANA time zone such as 'Europe/Berlin'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput.for_field(field, "unknown time zone") from None
    return value


_ZONES: set[str] | None = None


def _timezones() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones() | {"UTC"}
    return _ZONES
