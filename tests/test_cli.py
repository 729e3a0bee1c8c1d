"""The operator's first commands: the version, what migrate applied, and what to do when the
database is bootstrapped already."""

from __future__ import annotations

import socket
from importlib.metadata import version
from pathlib import Path

from support.cli import run_cli


async def test_version(tmp_path: Path) -> None:
    result = await run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"orgplane {version('orgplane')}"


async def test_migrate_says_what_it_applied_and_bootstrap_how_to_get_a_key(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'orgplane.db'}"
    first = await run_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("applied ") and "0001" in lines[0], first.stdout
    assert lines[-1] == "database is up to date"
    again = await run_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert again.stdout.splitlines() == ["database is up to date"]
    created = await run_cli("bootstrap", "--database-url", url, cwd=tmp_path)
    assert created.returncode == 0 and "admin key:" in created.stdout, created.stderr
    repeated = await run_cli("bootstrap", "--database-url", url, cwd=tmp_path)
    assert repeated.returncode == 0
    assert "already bootstrapped" in repeated.stdout
    assert "orgplane keys create" in repeated.stdout


async def test_serve_refuses_a_port_already_listened_on(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"sqlite+aiosqlite:///{tmp_path / 'orgplane.db'}"
        result = await run_cli(
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--database-url",
            url,
            cwd=tmp_path,
        )
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot serve on 127.0.0.1:{port}" in line and "in use" in line
    assert "serving on" not in result.stdout
