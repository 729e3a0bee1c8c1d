"""OpenAPI helpers: the problem responses each operation can give, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation

from orgplane.api.native.schemas import Problem

_DESCRIPTIONS = {
    400: "Invalid input: `errors` names each bad field",
    401: "Missing or invalid credentials",
    403: "The credential lacks the required scope",
    404: "No such organization within the credential's reach",
    409: "The change conflicts with the current state",
    410: "Gone: past the restore window",
    412: "If-Match does not match the current ETag",
    413: "Request body too large",
    422: "Idempotency-Key reused with a different request",
    429: "Rate limit exceeded; see Retry-After",
}


def problems(*statuses: int, described: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """The problem responses of an operation: the usual ones and ``statuses``, each with its
    usual description or the operation's own (``described``)."""
    codes = sorted({400, 401, 403, 404, 429, *statuses, *(described or {})})
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=(described or {}).get(code, _DESCRIPTIONS[code]),
            media_type="application/problem+json",
            # Litestar's generated examples are random strings: noise, and a different document
            # on every start.
            generate_examples=False,
        )
        for code in codes
    }


@dataclass
class PublicOperation(Operation):
    """An operation that needs no credentials: ``security: []`` overrides the global bearer one."""

    def __post_init__(self) -> None:
        self.security = []
