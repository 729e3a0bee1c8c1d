"""OpenAPI for the dialects: each lists its operations under its own tag and security scheme,
and documents its errors in the vendor's envelope rather than problem+json."""

from __future__ import annotations

from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import SecurityScheme

# The security schemes the dialects' routers name; registered once in the app's components.
SECURITY_SCHEMES = {
    "DatadogApiKey": SecurityScheme(
        type="apiKey",
        name="DD-API-KEY",
        security_scheme_in="header",
        description="Datadog API key (32 hex characters) of a `datadog` key",
    ),
    "DatadogApplicationKey": SecurityScheme(
        type="apiKey",
        name="DD-APPLICATION-KEY",
        security_scheme_in="header",
        description="Datadog application key (40 hex characters) of the same `datadog` key",
    ),
    "MakeToken": SecurityScheme(
        type="apiKey",
        name="Authorization",
        security_scheme_in="header",
        description="`Token <uuid>`: the token of a `make` key",
    ),
    "SumoLogicAccessKey": SecurityScheme(
        type="http",
        scheme="basic",
        description="`accessId:accessKey` of a `sumologic` key",
    ),
}

DATADOG_SECURITY: list[dict[str, list[str]]] = [{"DatadogApiKey": [], "DatadogApplicationKey": []}]
MAKE_SECURITY: list[dict[str, list[str]]] = [{"MakeToken": []}]
SUMOLOGIC_SECURITY: list[dict[str, list[str]]] = [{"SumoLogicAccessKey": []}]


def vendor_errors(
    error_type: Any, descriptions: dict[int, str], media_type: str = "application/json"
) -> dict[int, ResponseSpec]:
    """The error responses of a dialect's operation: each status with the vendor's body."""
    return {
        status: ResponseSpec(
            data_container=error_type,
            description=description,
            media_type=media_type,
            generate_examples=False,
        )
        for status, description in sorted(descriptions.items())
    }
