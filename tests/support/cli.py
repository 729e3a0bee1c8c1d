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
