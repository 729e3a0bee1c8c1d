"""The operator's first commands: the version, what migrate applied, and what to do when the
database is bootstrapped already."""

from __future__ import annotations

import re
import socket
import sqlite3
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
    # The root's first owner is invited to the console: the link sets their password.
    assert re.search(
        r"^console:    http://127\.0\.0\.1:8000/console/invitations/opi_\S+$",
        created.stdout,
        re.MULTILINE,
    ), created.stdout
    assert "admin@example.com" in created.stdout
    # What the command line changed is audited as the cli's.
    with sqlite3.connect(tmp_path / "orgplane.db") as db:
        surfaces = db.execute("SELECT DISTINCT surface FROM audit_log").fetchall()
    assert surfaces == [("cli",)]
    repeated = await run_cli("bootstrap", "--database-url", url, cwd=tmp_path)
    assert repeated.returncode == 0
    assert "already bootstrapped" in repeated.stdout
    assert "orgplane keys create" in repeated.stdout


async def test_bootstrap_without_a_console_user(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'orgplane.db'}"
    assert (await run_cli("migrate", "--database-url", url, cwd=tmp_path)).returncode == 0
    created = await run_cli("bootstrap", "--database-url", url, "--email", "", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "admin key:" in created.stdout and "console:" not in created.stdout


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


async def test_a_missing_or_unmigrated_database_is_one_line(tmp_path: Path) -> None:
    # No file: nothing is created, and the line says where it looked and what to do.
    result = await run_cli("orgs", "tree", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(tmp_path / "orgplane.db") in line and "orgplane migrate" in line
    assert not (tmp_path / "orgplane.db").exists()
    # A file that was never migrated.
    (tmp_path / "empty.db").touch()
    for command in (("orgs", "tree"), ("serve", "--port", "0")):
        result = await run_cli(
            *command, "--database-url", "sqlite+aiosqlite:///empty.db", cwd=tmp_path
        )
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "not migrated: run `orgplane migrate`" in line
        assert "serving on" not in result.stdout


async def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://orgplane:s3cret@127.0.0.1:1/orgplane"
    for command in (("migrate",), ("orgs", "tree"), ("keys", "list", "anyorg")):
        result = await run_cli(*command, "--database-url", url, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert "cannot connect" in line and "127.0.0.1:1" in line
        assert "s3cret" not in result.stderr + result.stdout


async def test_serve_help_shows_defaults_and_environment_variables(tmp_path: Path) -> None:
    result = await run_cli("serve", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for variable, default in (
        ("ORGPLANE_HOST", "127.0.0.1"),
        ("ORGPLANE_PORT", "8000"),
        ("ORGPLANE_WORKERS", "1"),
        ("ORGPLANE_SERVER", "granian"),
        ("ORGPLANE_DATABASE_URL", None),
    ):
        assert variable in result.stdout
        if default is not None:
            assert f"default: ({default})" in result.stdout
