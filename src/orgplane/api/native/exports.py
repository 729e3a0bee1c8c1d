"""Streamed exports of a whole filtered range, as NDJSON or CSV, chosen by the Accept header."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Request
from litestar.response import Stream

from orgplane.db.engine import Database, Reader

NDJSON = "application/x-ndjson"
CSV = "text/csv"
EXPORT_DOC = (
    " Newest first. Send `Accept: application/x-ndjson` or `Accept: text/csv` to export the "
    "whole filtered range as a stream instead of a page."
)
Batches = Callable[[Reader], AsyncIterator[list[Any]]]


def export_format(request: Request[Any, Any, Any]) -> str | None:
    accept = request.headers.get("accept", "")
    if NDJSON in accept:
        return NDJSON
    if CSV in accept:
        return CSV
    return None


def export_response(
    db: Database,
    fmt: str,
    batches: Batches,
    render: Callable[[Any], msgspec.Struct],
    entry_type: type[msgspec.Struct],
    filename: str,
) -> Stream:
    """Stream every row ``batches`` yields (on a read connection of its own) in ``fmt``."""
    extension = "ndjson" if fmt == NDJSON else "csv"
    return Stream(
        _encode(db, fmt, batches, render, entry_type),
        media_type=fmt,
        # Litestar prefers the handler's media type (JSON) over the Stream's: set it explicitly.
        headers={
            "Content-Type": f"{fmt}; charset=utf-8" if fmt == CSV else fmt,
            "Content-Disposition": f'attachment; filename="{filename}.{extension}"',
        },
    )


async def _encode(
    db: Database,
    fmt: str,
    batches: Batches,
    render: Callable[[Any], msgspec.Struct],
    entry_type: type[msgspec.Struct],
) -> AsyncIterator[bytes]:
    columns = [f.encode_name for f in msgspec.structs.fields(entry_type)]
    if fmt == CSV:
        # The header comes first, even when no entry matches.
        out = io.StringIO()
        csv.writer(out).writerow(columns)
        yield out.getvalue().encode()
    async with db.read() as conn:
        async for batch in batches(conn):
            entries = [msgspec.to_builtins(render(r)) for r in batch]
            if fmt == NDJSON:
                yield b"".join(msgspec.json.encode(e) + b"\n" for e in entries)
                continue
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=columns)
            for entry in entries:
                writer.writerow({k: _csv_cell(v) for k, v in entry.items()})
            yield out.getvalue().encode()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return msgspec.json.encode(value).decode()
    return "" if value is None else value
