"""The ``orgplane`` command line run as a subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """Run ``orgplane`` in a subprocess, away from any ORGPLANE_ variable or .env of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orgplane.cli",
        *args,
        cwd=cwd,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_serve(db_url: str, **env: str) -> tuple[asyncio.subprocess.Process, str]:
    """`orgplane serve` (granian, one process) in a subprocess on the test's database, once it
    answers; the process and its base URL."""
    import httpx

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orgplane.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        env={
            **clean,
            "ORGPLANE_DATABASE_URL": db_url,
            "ORGPLANE_ENVIRONMENT": "test",
            "ORGPLANE_LOG_LEVEL": "warning",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            if process.returncode is not None:
                out, err = await process.communicate()
                raise AssertionError(f"orgplane serve exited: {out!r} {err!r}")
            try:
                await client.get("/docs/openapi.json")
                return process, base
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("orgplane serve did not answer")
