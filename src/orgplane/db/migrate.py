"""Alembic driven from code, so migrations run from an installed package without an ini file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def _outside_event_loop(fn: Callable[[], None]) -> None:
    """Alembic's env runs its own event loop; from inside a running loop, use another thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(fn).result()


def upgrade(database_url: str, revision: str = "head") -> list[str]:
    """Apply the migrations up to ``revision``; the revisions applied, oldest first (empty when
    the schema was up to date)."""
    config = alembic_config(database_url)
    applied: list[str] = []

    def record(step: Any, **_: Any) -> None:
        applied.append(step.up_revision_id)

    # Alembic calls this for each migration it runs (env.py passes it to the context).
    config.attributes["on_version_apply"] = record
    _outside_event_loop(lambda: command.upgrade(config, revision))
    return applied


def downgrade(database_url: str, revision: str) -> None:
    _outside_event_loop(lambda: command.downgrade(alembic_config(database_url), revision))
