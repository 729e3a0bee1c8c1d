"""One error base that carries its HTTP status; each surface renders it in its own envelope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One bad input: where it is (``body.name``, ``query.limit``) and what is wrong with it."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class OrgplaneError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}


class InvalidInput(OrgplaneError):
    status = 400
    code = "invalid_input"
    title = "Invalid input"

    @classmethod
    def for_field(cls, field: str, message: str) -> InvalidInput:
        return cls(f"{field}: {message}", errors=[FieldError(field, message)])


class Unauthenticated(OrgplaneError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(OrgplaneError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(OrgplaneError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(OrgplaneError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(OrgplaneError):
    status = 410
    code = "gone"
    title = "Gone"


class PreconditionFailed(OrgplaneError):
    status = 412
    code = "precondition_failed"
    title = "Precondition failed"


class PayloadTooLarge(OrgplaneError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class Unprocessable(OrgplaneError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable request"


class RateLimited(OrgplaneError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class PreconditionRequired(OrgplaneError):
    status = 428
    code = "precondition_required"
    title = "Precondition required"


class ConfirmationRequired(OrgplaneError):
    """A destructive change that needs the caller's explicit confirmation (e.g. deleting an org
    still in use)."""

    status = 406
    code = "confirmation_required"
    title = "Confirmation required"
