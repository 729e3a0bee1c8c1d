"""The rules an org's fields obey, whichever surface the change comes through."""

from __future__ import annotations

import math
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
# Documents (settings, customizations) nest at most this deep; the audit chain wraps them in a
# few levels more, all well within what the JSON encoder follows (~254).
MAX_DOCUMENT_DEPTH = 64
_INT_MIN = -(2**63)
_UINT_MAX = 2**64 - 1
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
    """A JSON object every store and the audit chain can hold, or a 400 naming where it is not.

    Nested at most ``MAX_DOCUMENT_DEPTH`` deep, integers within 64 bits (-2^63 to 2^64-1, what
    the encoder writes), finite numbers, no NUL (PostgreSQL's jsonb cannot store ``\\u0000``;
    refused on both databases alike), and at most ``MAX_DOCUMENT_BYTES`` encoded.
    """
    if not isinstance(value, dict):
        raise InvalidInput.for_field(field, "must be a JSON object")
    problem = _problem(value, field, 1)
    if problem is not None:
        where, message = problem
        at = "" if where == field else f" (at {where})"
        raise InvalidInput.for_field(field, f"{message}{at}")
    if len(orjson.dumps(value)) > MAX_DOCUMENT_BYTES:
        raise InvalidInput.for_field(field, f"must encode to at most {MAX_DOCUMENT_BYTES} bytes")
    return value


def _problem(value: Any, where: str, depth: int) -> tuple[str, str] | None:
    """The first thing in ``value`` (at nesting ``depth``) no store can hold: where and why."""
    if isinstance(value, str):
        return (where, "must not contain NUL characters (\\u0000)") if "\x00" in value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        ok = _INT_MIN <= value <= _UINT_MAX
        return None if ok else (where, "integers must be between -2^63 and 2^64-1")
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, "numbers must be finite")
    if not isinstance(value, dict | list):
        return (where, "must be a JSON value")
    if depth > MAX_DOCUMENT_DEPTH:
        return (where, f"must be nested at most {MAX_DOCUMENT_DEPTH} deep")
    if isinstance(value, list):
        items = ((f"{where}[{i}]", item) for i, item in enumerate(value))
    else:
        for key in value:
            if not isinstance(key, str) or "\x00" in key:
                return (where, "member names must be strings without NUL characters (\\u0000)")
        items = ((f"{where}.{key}", item) for key, item in value.items())
    for path, item in items:
        problem = _problem(item, path, depth + 1)
        if problem is not None:
            return problem
    return None


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
    if key == "mfa_required":
        if not isinstance(value, bool):
            raise InvalidInput.for_field(key, "must be true or false")
        return value
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
