"""The one way a JSON request body is decoded, on every surface.

Whatever is not JSON orgplane can hold is refused here as a 400 naming ``body``, in the
answering surface's own format: malformed JSON, invalid UTF-8 inside a string, a document
nested deeper than the decoder can follow. Litestar's own decoding lets the last two through as
``UnicodeDecodeError`` and ``RecursionError``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException

from orgplane.core.errors import InvalidInput


def not_json_reason(exc: BaseException) -> str | None:
    """Why a body failed to decode, when the failure is the body's fault (else None)."""
    if isinstance(exc, UnicodeDecodeError):
        return "is not valid UTF-8"
    if isinstance(exc, RecursionError):
        return "is nested too deeply"
    if isinstance(exc, msgspec.DecodeError | SerializationException):
        return "is not valid JSON"
    return None


def decode_body(raw: bytes, type: Any = Any) -> Any:
    """Decode ``raw`` (empty is ``null``) as ``type``; a 400 naming ``body`` when it is not."""
    try:
        return msgspec.json.decode(raw or b"null", type=type)
    except msgspec.ValidationError as exc:
        raise InvalidInput.for_field("body", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput.for_field("body", not_json_reason(exc) or "is not valid JSON") from None


class OrgplaneRequest(Request[Any, Any, Any]):
    """Litestar's request, whose ``json()`` refuses every undecodable body as not JSON.

    Litestar turns a ``SerializationException`` raised while reading the handler's arguments
    into a 400, which each surface renders in its own format.
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except (UnicodeDecodeError, RecursionError) as exc:
            raise SerializationException(f"the body {not_json_reason(exc)}") from exc
